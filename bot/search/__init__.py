"""Search accelerators, one per backend, behind `plan_search` (and `older_plan`).

Every plan is only a pre-filter: storage always re-checks each word as a plain substring of the
record's folded text, so whichever plan runs, the result equals plain substring matching.

- SQLite: a contentless FTS5 trigram index (migration 0001) fed by triggers. Words of 3+ characters
  become an AND of their trigrams, which FTS5 streams newest first. 1- and 2-character words are
  looked for in the newest records first; for older ones they become an OR of the indexed trigrams
  that start with them (the indexed text ends in two sentinel characters, so every occurrence starts
  a trigram). LIKE on the trigram table is never used: SQLite 3.40 returns nothing there for
  2-character Chinese.
- MariaDB with Mroonga: a bigram full-text table beside T_CONTENT. Its cost grows with the number of
  matches, so the newest records are scanned first (common words fill a page there); for the older
  ones Mroonga's candidates are joined when few, else the scan goes on.
- Otherwise (and on a Galera cluster, which does not replicate Mroonga tables): a newest-first scan
  with LOCATE/instr on the folded text, in id ranges, bounded in time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

FTS_TABLE = "T_CONTENT_FTS"
FTS_VOCAB = "T_CONTENT_FTS_VOCAB"
MROONGA_TABLE = "T_CONTENT_FT"

# Above this many candidates a newest-first scan finds a page sooner than joining them all.
MAX_CANDIDATES = 20_000
# A short word that starts more distinct trigrams than this is common: scan instead.
MAX_PREFIX_TERMS = 400
# At most this many trigrams of a long word go into the FTS5 query.
MAX_TRIGRAMS = 8
# Words an index answers slowly (short ones in SQLite, all in Mroonga, whose cost grows with the
# matches) are first looked for in this many of the newest records.
WINDOW = 5_000
# A scan without an index goes through ids in ranges of this size and stops after this long.
SCAN_CHUNK = 25_000
SCAN_SECONDS = 0.25


def fold(body: str) -> str:
    """The searchable form of a text: case folded once, in Python, so every backend agrees."""
    return body.lower()


@dataclass(frozen=True)
class Plan:
    """How to narrow a search before the substring re-check.

    kind: "none" (some word cannot match: answer empty), "scan" (no accelerator),
    "fts" (SQLite: `match` is an FTS5 expression streamed newest first),
    "window" (scan the newest records first, then ask `older_plan` for the rest),
    "ids" (`ids` are the candidates, from Mroonga).
    """

    kind: str
    match: str = ""
    ids: tuple[int, ...] = ()


SCAN = Plan("scan")
NONE = Plan("none")
WINDOW_FIRST = Plan("window")


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _trigrams(word: str) -> list[str]:
    return sorted({word[i:i + 3] for i in range(len(word) - 2)})


def _sqlite_plan(words: Sequence[str]) -> Plan:
    """Words of 3+ characters: an AND of their trigrams, which FTS5 streams newest first.

    No statistics are read on purpose: fts5vocab counts a term by walking its whole doclist, which
    for a common trigram costs more than the search it was meant to steer.
    """
    grams = sorted({g for w in words if len(w) >= 3 for g in _trigrams(w)})
    if not grams:
        return WINDOW_FIRST
    if len(grams) > MAX_TRIGRAMS:  # a long phrase: an evenly spread sample filters as well
        step = len(grams) / MAX_TRIGRAMS
        grams = [grams[int(i * step)] for i in range(MAX_TRIGRAMS)]
    return Plan("fts", " AND ".join(_fts_phrase(g) for g in grams))


def short_plan(conn: Connection, words: Sequence[str]) -> Plan:
    """Only 1- and 2-character words: an OR of the indexed trigrams that start with the rarest one.

    Storage calls this only after a scan of the newest records left the page unfilled, since short
    words are mostly common and the newest records usually hold a page of them.
    """
    best: tuple[int, str] | None = None
    for word in words:
        rows = conn.execute(
            text(f"SELECT term, doc FROM {FTS_VOCAB} WHERE term >= :lo AND term < :hi LIMIT :n"),
            {"lo": word, "hi": word + "\U0010ffff\U0010ffff", "n": MAX_PREFIX_TERMS + 1},
        ).all()
        if not rows:
            return NONE
        if len(rows) > MAX_PREFIX_TERMS:
            continue
        bound = sum(doc for _, doc in rows)
        if best is None or bound < best[0]:
            best = (bound, "(" + " OR ".join(_fts_phrase(term) for term, _ in rows) + ")")
    return Plan("fts", best[1]) if best else SCAN


_BREAKS = re.compile(r"[\s\x00-\x1f\x7f]+")


def _mroonga_phrase(word: str) -> str:
    # Bigram tokens never span whitespace, and Groonga's query parser stops at control characters:
    # each piece between them is searched on its own (a superset; the re-check makes it exact).
    pieces = [p for p in _BREAKS.split(word) if p]
    return " ".join('+"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in pieces)


def _mroonga_ids(conn: Connection, words: Sequence[str], below: int) -> Plan:
    """Mroonga's candidates older than `below`, when they are few enough to join; else a scan."""
    query = " ".join(q for q in (_mroonga_phrase(w) for w in words) if q)
    if not query:
        return SCAN
    try:
        ids = conn.execute(
            text(f"SELECT record_id FROM {MROONGA_TABLE} WHERE MATCH(search_text) AGAINST(:q IN BOOLEAN MODE) "
                 "AND record_id < :below LIMIT :n"),
            {"q": query, "below": below, "n": MAX_CANDIDATES + 1},
        ).scalars().all()
    except DBAPIError as exc:
        # A query Groonga cannot parse still has an answer: the plain scan gives it.
        log.warning("Mroonga refused %r (%s); scanning instead", query, exc.orig)
        return SCAN
    if not ids:
        return NONE
    if len(ids) > MAX_CANDIDATES:
        return SCAN
    return Plan("ids", ids=tuple(ids))


def older_plan(conn: Connection, backend: str, words: Sequence[str], floor: int) -> Plan:
    """After the newest records were scanned down to `floor`: how to search the older ones."""
    if backend == "sqlite-fts5":
        return short_plan(conn, words)
    if backend == "mroonga":
        return _mroonga_ids(conn, words, floor + 1)
    return SCAN


def plan_search(conn: Connection, backend: str, words: Sequence[str]) -> Plan:
    """Choose how to narrow a search for these folded words on this backend."""
    words = [w for w in words if w]
    if not words:
        return SCAN
    if backend == "sqlite-fts5":
        return _sqlite_plan(words)
    if backend == "mroonga":
        return WINDOW_FIRST
    return SCAN


def detect_backend(engine: Engine) -> str:
    """Which accelerator this database has: sqlite-fts5, mroonga, or like (none)."""
    if engine.dialect.name == "sqlite":
        return "sqlite-fts5"
    with engine.connect() as conn:
        if on_galera(conn):
            return "like"
        exists = conn.execute(
            text("SELECT COUNT(*) FROM information_schema.tables "
                 "WHERE table_schema = DATABASE() AND table_name = :t AND engine = 'Mroonga'"),
            {"t": MROONGA_TABLE},
        ).scalar_one()
    return "mroonga" if exists else "like"


def on_galera(conn: Connection) -> bool:
    """Whether this server is a Galera node. Galera replicates InnoDB rows only: a Mroonga table
    would hold, on each node, just the records written through that node, and a search would find
    different records depending on the node it reached. A Galera cluster searches T_CONTENT itself
    (the LOCATE scan), which every node has whole."""
    row = conn.execute(text("SHOW VARIABLES LIKE 'wsrep_on'")).first()
    return bool(row and str(row[1]).upper() == "ON")


def mroonga_available(conn: Connection) -> bool:
    row = conn.execute(text("SELECT SUPPORT FROM information_schema.ENGINES WHERE ENGINE = 'Mroonga'")).first()
    return bool(row and row[0] in ("YES", "DEFAULT"))


def ensure_mroonga(engine: Engine) -> str:
    """Create and fill the Mroonga table when the engine is installed; return the backend in use.

    It is a derived index, not part of schema.sql: a server without Mroonga simply searches with LIKE.
    """
    if engine.dialect.name == "sqlite":
        return "sqlite-fts5"
    with engine.begin() as conn:
        if not mroonga_available(conn) or on_galera(conn):
            return "like"
        conn.execute(text(
            f"CREATE TABLE IF NOT EXISTS {MROONGA_TABLE} ("
            " record_id BIGINT NOT NULL PRIMARY KEY,"
            " search_text MEDIUMTEXT NOT NULL,"
            " FULLTEXT INDEX ft_search (search_text)"
            " COMMENT 'tokenizer \"TokenBigramSplitSymbolAlphaDigit\", normalizer \"NormalizerAuto\"'"
            ") ENGINE=Mroonga DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ))
        # Fill in whatever was written while the index did not exist (or by a process without it).
        conn.execute(text(
            f"INSERT INTO {MROONGA_TABLE} (record_id, search_text) "
            f"SELECT c.id, c.search_text FROM T_CONTENT c "
            f"LEFT JOIN {MROONGA_TABLE} f ON f.record_id = c.id WHERE f.record_id IS NULL"
        ))
    return "mroonga"


_INDEX_ONE = text(f"REPLACE INTO {MROONGA_TABLE} (record_id, search_text) VALUES (:id, :t)")


def index_text(conn: Connection, backend: str, record_id: int, search_text: str) -> None:
    """Keep the MariaDB accelerator in step with a write (SQLite's triggers do this themselves)."""
    if backend == "mroonga":
        conn.execute(_INDEX_ONE, {"id": record_id, "t": search_text})
