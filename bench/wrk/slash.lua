-- wrk script for bench/http_bench.py: POSTs a slash-command form the way Mattermost does.
--
-- Everything comes from the environment, set by http_bench.py:
--   BENCH_FORM    the url-encoded form fields except `text` (token, user_id, user_name, channel, ...)
--   BENCH_TOKEN   sent again as "Authorization: Token <token>", as Mattermost does
--   BENCH_TEXT    the command text, e.g. "add ..." or "find restart"
--   BENCH_VARY    "1": append " n<thread>-<counter>" to the text so every request differs
--   BENCH_EXPECT  a substring every reply body must contain; other replies are counted as bad
-- done() prints one line "BENCH_RESULT key=value ..." that http_bench.py reads besides wrk's own text.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function init(args)
  form = os.getenv("BENCH_FORM") or ""
  text = os.getenv("BENCH_TEXT") or ""
  vary = os.getenv("BENCH_VARY") == "1"
  expect = os.getenv("BENCH_EXPECT") or ""
  counter = 0
  bad = 0
  bad_sample = ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = "Token " .. (os.getenv("BENCH_TOKEN") or "")
  wrk.headers["Accept"] = "application/json"
  wrk.headers["User-Agent"] = "mattermost-recbot-http-bench"
  fixed_body = form .. "&text=" .. urlencode(text)
end

function request()
  local body = fixed_body
  if vary then
    counter = counter + 1
    body = form .. "&text=" .. urlencode(text .. " n" .. tid .. "-" .. counter)
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 and expect ~= "" and not string.find(body or "", expect, 1, true) then
    bad = bad + 1
    if bad_sample == "" then
      bad_sample = string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  local sample = ""
  for _, thread in ipairs(threads) do
    bad_total = bad_total + (thread:get("bad") or 0)
    local s = thread:get("bad_sample") or ""
    if sample == "" then
      sample = s
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d "
      .. "status=%d timeout=%d bad=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, bad_total))
  if sample ~= "" then
    io.write("BENCH_BAD_SAMPLE " .. string.gsub(sample, "\n", " ") .. "\n")
  end
end
