"""How long a member who sees few owners waits for a search, now that such a member is searched owner
by owner (so a search's time never depends on records they cannot see).

    python -m bench.few_owners --records 100000 --workdir DIR

Seeds a SQLite file with RECORDS records spread over 5 owners (a rare word in 3 of them), lets one
member see 2 owners (40 % of the records), and prints median and p95 of `find` for a rare, a common
and an absent word, as that member and as an admin (who still uses the index).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bot import migrate
from bot.storage import Filter, Storage, make_engine

WORDS = ["restart", "nginx", "backup", "服务器", "重启", "db", "deploy", "disk", "clean", "web-01"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workdir", default="bench-data")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    path = Path(args.workdir) / f"few-owners-{args.records}.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    storage = Storage(engine)
    owners = [storage.ensure_user(f"mm-o{i}", f"o{i}")[0] for i in range(5)]
    admin = storage.ensure_user("mm-admin", "admin")[0]
    admin = storage.promote(admin, "benchmark")
    if not storage.find(admin, Filter(), limit=1).records:
        rnd = random.Random(1)
        for i in range(args.records):
            rare = " zq-rare-7731" if i % (args.records // 3) == 5 else ""
            storage.add_record(owners[i % 5], " ".join(rnd.choice(WORDS) for _ in range(8)) + rare)
    storage.grant(admin, owners[0].id, [owners[1].id])
    print(f"{args.records:,} records, 5 owners; the member sees 2 of them\n")
    print("| viewer | word | median ms | p95 ms |\n|---|---|--:|--:|")
    for viewer, who in ((owners[0], "member"), (admin, "admin")):
        for word in ("zq-rare-7731", "restart", "absentword42"):
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                storage.find(viewer, Filter(words=(word,)), limit=10, count_up_to=100)
                times.append((time.perf_counter() - started) * 1000)
            p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
            print(f"| {who} | {word} | {statistics.median(times):.1f} | {p95:.1f} |")
    storage.dispose()


if __name__ == "__main__":
    main()
