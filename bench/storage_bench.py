"""Storage benchmark: recbot's `Storage.find` against the old Tornado + MySQL query, per backend.

Run `python -m bench.storage_bench --help`; bench/README.md explains the output.

For each backend (sqlite, mariadb = MariaDB with the Mroonga table, mariadb-like = MariaDB without it)
a database is built and seeded in bulk with a deterministic corpus of mixed Chinese/English
operation-log records, then every query is timed as an admin and as a member granted 20 owners,
next to the old design's `LIKE '%word%' ... FIND_IN_SET ... LIMIT/OFFSET` query on a copy of the
same rows. Tables, the targets with PASS/MISS, the query plans of misses, and a markdown copy of
everything are printed to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot import migrate, search
from bot.storage import Filter, Storage, User, extract_tags, make_engine
from bot.tables import content, grant, tag

SEED_VERSION = "1"  # bump when the corpus changes, so kept databases are rebuilt
BATCH = 5_000
BACKENDS = ("sqlite", "mariadb", "mariadb-like")
EXPECTED_SEARCH = {"sqlite": "sqlite-fts5", "mariadb": "mroonga", "mariadb-like": "like"}
PAGE = 10
DEEP_PAGE = 50

# ---- the corpus ------------------------------------------------------------------------------
# Ordered roughly by how often an ops log would use them: the draw is Zipf-like by position.

ENGLISH = """
restart check deploy server service update config disk memory cpu load network error warning log
backup restore upgrade rollback release patch cluster node host database mysql redis nginx kafka
docker kubernetes pod container image build job cron queue cache proxy gateway api timeout latency
alert monitor metric dashboard grafana prometheus elasticsearch kibana logstash filebeat zookeeper
rabbitmq mongodb postgres haproxy keepalived tomcat jenkins gitlab harbor ansible terraform helm
ingress volume mount partition inode swap kernel reboot shutdown startup systemd journal rotate
cleanup purge archive compress snapshot replica master slave primary secondary failover switchover
sync lag binlog index query slow lock deadlock transaction commit connection pool thread process
port firewall iptables route dns domain certificate ssl tls expire renew key secret token password
account user permission role group sudo ssh login audit scan vulnerability hotfix version branch
merge pipeline artifact package install uninstall dependency library module driver firmware bios
raid controller nic switch router vlan subnet bandwidth packet loss jitter retransmit handshake
heartbeat probe health readiness liveness schedule scale replicas shard capacity quota limit
throttle retry callback webhook endpoint upstream downstream client traffic canary rollout freeze
maintenance window ticket incident outage postmortem oncall escalate resolve verify confirm test
staging production sandbox region zone datacenter rack power fan temperature battery ups spare
replace order vendor contract invoice budget cost report weekly daily monthly review plan change
request approve reject pending done failed success ok retrying stuck hung crash oom killed core
dump trace profile flame graph sample threshold spike peak average trend usage quota full free
inodes cleanup tmp var opt home data logs etc root nobody www deployer operator admin manager
team lead vendor support case hours night weekend holiday urgent minor major critical blocker
note todo followup handover checklist runbook docs wiki manual guide standard baseline benchmark
stress pressure tuning parameter sysctl ulimit hugepages numa irq affinity governor latency
"""

CHINESE = """
重启 服务 部署 上线 回滚 扩容 缩容 迁移 备份 恢复 监控 告警 日志 磁盘 内存 网络 带宽 延迟 超时 故障
排查 修复 升级 降级 配置 变更 发布 版本 补丁 证书 续期 域名 解析 负载 均衡 集群 节点 主机 机房 机柜
交换 路由 防火 端口 进程 线程 连接 数据 索引 查询 慢查 锁表 死锁 主从 同步 复制 延时 清理 归档 压缩
分区 容量 空间 目录 文件 权限 账号 密码 密钥 令牌 登录 审计 安全 漏洞 扫描 加固 巡检 值班 交接 工单
审批 流程 通知 邮件 短信 电话 会议 评审 测试 验证 环境 生产 预发 灰度 全量 流量 切换 下线 停机 维护
窗口 计划 临时 紧急 处理 完成 失败 成功 正常 异常 报错 错误 警告 信息 调试 跟踪 采集 上报 统计 分析
报表 指标 阈值 水位 峰值 均值 趋势 容器 镜像 仓库 构建 编译 打包 脚本 任务 定时 队列 消息 缓存 过期
刷新 预热 命中 穿透 雪崩 熔断 限流 重试 回调 接口 网关 代理 转发 隧道 专线 公网 内网 地址 分配 释放
申请 采购 到货 上架 下架 硬盘 更换 电源 风扇 主板 网卡 光纤 模块 固件 驱动 内核 系统 补齐 核对 确认
检查 记录 汇总 整理 文档 说明 手册 规范 标准 优化 调整 参数 性能 压测 基线 对比 回归 观察 稳定 抖动
丢包 重传 握手 断开 重连 心跳 探活 健康 存活 就绪 调度 编排 副本 分片 扩展 收缩 弹性 伸缩 资源 配额
成本 账单 预算 采样 链路 拓扑 依赖 上游 下游 客户 用户 反馈 投诉 响应 工程 开发 运维 产品 经理 团队
同事 领导 周报 日报 月报 季度 年度 目标 进度 风险 问题 方案 决策 执行 落地 跟进 闭环 复盘 总结 改进
事故 影响 范围 根因 时间 凌晨 上午 下午 晚上 周末 节假 今天 昨天 明天 本周 下周 已经 需要 可能 建议
注意 重要 优先 批量 单个 全部 部分 新增 删除 修改 替换 导入 导出 上传 下载 同城 异地 容灾 演练 切流
回切 主库 从库 读写 分离 只读 迁库 扩表 加列 建表 删表 清表
"""

TAGS = ("deploy", "db", "network", "disk", "backup", "incident", "change", "security", "变更", "故障", "巡检", "扩容")
HOST_PREFIXES = ("web", "db", "cache", "mq", "api", "job", "lb", "es", "k8s", "gw")

RARE_EN = "zq-rare-7731"  # made up, seeded into RARE_EN_COUNT records
RARE_EN_COUNT = 30
RARE_ZH = "鑫磊"  # neither character is in CHINESE, so only the seeded records hold it
RARE_ZH_COUNT = 20
ABSENT = "nonexistentword42"
ZH_MID_RANK = 40  # a Chinese word of middling frequency
GRANTED_OWNERS = 20


def _vocabulary(words: str) -> list[str]:
    return list(dict.fromkeys(words.split()))


EN_WORDS = _vocabulary(ENGLISH)
ZH_WORDS = _vocabulary(CHINESE)
COMMON = EN_WORDS[0]
ZH_MID = ZH_WORDS[ZH_MID_RANK]


def _zipf(n: int, s: float = 1.0) -> list[float]:
    return list(accumulate(1.0 / (rank ** s) for rank in range(1, n + 1)))


class Corpus:
    """Deterministic records: the same `Random(42)` sequence on every backend."""

    def __init__(self, n: int, owner_ids: Sequence[int], member_id: int) -> None:
        self.n = n
        self.rng = random.Random(42)
        self.owner_ids = list(owner_ids)
        self.owner_cum = _zipf(len(owner_ids), 0.5)
        self.en_cum = _zipf(len(EN_WORDS))
        self.zh_cum = _zipf(len(ZH_WORDS))
        rng = self.rng
        picks = rng.sample(range(n), min(n, RARE_EN_COUNT + RARE_ZH_COUNT))
        self.rare_en = set(picks[:RARE_EN_COUNT])
        self.rare_zh = set(picks[RARE_EN_COUNT:])
        self.member_owned = set(rng.sample(range(n), min(n, max(20, n // 5_000))))
        self.member_id = member_id

    def body(self, extra: Sequence[str] = ()) -> str:
        rng = self.rng
        count = rng.randint(8, 25)
        kinds = rng.choices("ezhn", cum_weights=(48, 88, 96, 100), k=count)
        en = iter(rng.choices(EN_WORDS, cum_weights=self.en_cum, k=kinds.count("e")))
        zh = iter(rng.choices(ZH_WORDS, cum_weights=self.zh_cum, k=kinds.count("z")))
        tokens: list[tuple[bool, str]] = []
        for kind in kinds:
            if kind == "e":
                tokens.append((False, next(en)))
            elif kind == "z":
                tokens.append((True, next(zh)))
            elif kind == "h":
                tokens.append((False, f"{rng.choice(HOST_PREFIXES)}-{rng.randint(1, 64):03d}"))
            else:
                tokens.append((False, rng.choice((f"{rng.randint(1, 99)}%", f"{rng.randint(1, 900)}GB",
                                                  f"pid {rng.randint(100, 65000)}", f"{rng.randint(1, 59)}min"))))
        for word in extra:
            tokens.insert(rng.randint(0, len(tokens)), (word == RARE_ZH, word))
        if rng.random() < 0.3:
            tags = " ".join("#" + t for t in rng.sample(TAGS, rng.randint(1, 2)))
            tokens.insert(0 if rng.random() < 0.5 else len(tokens), (False, tags))
        out: list[str] = []
        previous_cjk = False
        for cjk, token in tokens:
            if out and not (cjk and previous_cjk):  # Chinese words run together, like real notes
                out.append(" ")
            out.append(token)
            previous_cjk = cjk
        if rng.random() < 0.1:
            out.append(rng.choice(("。", "，已处理", " ok", "!")))
        return "".join(out)

    def batches(self, first_id: int, start: datetime) -> Iterator[tuple[list[dict], list[dict]]]:
        rng = self.rng
        when = start
        rows: list[dict] = []
        tags: list[dict] = []
        for i in range(self.n):
            extra = [RARE_EN] if i in self.rare_en else [RARE_ZH] if i in self.rare_zh else []
            body = self.body(extra)
            owner = (self.member_id if i in self.member_owned
                     else rng.choices(self.owner_ids, cum_weights=self.owner_cum)[0])
            when += timedelta(seconds=rng.randint(5, 120), microseconds=rng.randint(0, 999_999))
            record_id = first_id + i
            rows.append({"id": record_id, "owner_id": owner, "body": body, "search_text": search.fold(body),
                         "created_at": when, "updated_at": when})
            tags.extend({"record_id": record_id, "tag": t} for t in extract_tags(body))
            if len(rows) == BATCH:
                yield rows, tags
                rows, tags = [], []
        if rows:
            yield rows, tags


# ---- databases -------------------------------------------------------------------------------

BASELINE_DDL = {
    "sqlite": [
        "CREATE TABLE BASE_USER (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL, "
        "is_admin INTEGER NOT NULL DEFAULT 0, perm VARCHAR(4000) NOT NULL DEFAULT '')",
        "CREATE TABLE BASE_CONTENT (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, body TEXT NOT NULL, "
        "created_at DATETIME NOT NULL)",
        "CREATE INDEX ix_base_owner ON BASE_CONTENT (owner_id)",
    ],
    "mysql": [
        "CREATE TABLE BASE_USER (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, "
        "is_admin TINYINT NOT NULL DEFAULT 0, perm VARCHAR(4000) NOT NULL DEFAULT '') "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
        "CREATE TABLE BASE_CONTENT (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner_id BIGINT NOT NULL, "
        "body MEDIUMTEXT NOT NULL, created_at DATETIME NOT NULL, KEY ix_base_owner (owner_id)) "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
    ],
}

# The old page: body LIKE '%word%', visibility by a comma-separated list on the user, OFFSET paging.
BASELINE_VISIBLE = {
    "sqlite": "(u.is_admin = 1 OR (',' || u.perm || ',') LIKE ('%,' || c.owner_id || ',%'))",
    "mysql": "(u.is_admin = 1 OR FIND_IN_SET(c.owner_id, u.perm) > 0)",
}


def baseline_sql(dialect: str, words: Sequence[str], *, count: bool = False, limit: int = PAGE) -> str:
    where = [f"c.body LIKE :w{i}" for i in range(len(words))] + [BASELINE_VISIBLE[dialect]]
    what = "COUNT(*)" if count else "c.id, c.owner_id, c.body, c.created_at"
    tail = "" if count else f" ORDER BY c.id DESC LIMIT {limit} OFFSET :off"
    return (f"SELECT {what} FROM BASE_CONTENT c JOIN BASE_USER u ON u.id = :viewer "
            f"WHERE {' AND '.join(where)}{tail}")


@dataclass
class Db:
    backend: str
    storage: Storage
    admin: User
    member: User
    seeded_max_id: int
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds; empty when reused
    reused: bool = False
    location: str = ""

    @property
    def engine(self) -> Engine:
        return self.storage._engine

    @property
    def dialect(self) -> str:
        return "sqlite" if self.engine.dialect.name == "sqlite" else "mysql"


def _read_meta(engine: Engine) -> dict[str, str]:
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, value FROM BENCH_META")).all())  # type: ignore[arg-type]
    except Exception:
        return {}


def _wanted_meta(args: argparse.Namespace, backend: str) -> dict[str, str]:
    return {"seed_version": SEED_VERSION, "records": str(args.records), "owners": str(args.owners),
            "backend": backend}


def _mariadb_name(backend: str) -> str:
    return "recbot_bench_" + backend.replace("-", "_")


def _server_engine(args: argparse.Namespace) -> Engine:
    return create_engine(make_url(args.mariadb_url).set(database=None), isolation_level="AUTOCOMMIT")


def open_db(backend: str, args: argparse.Namespace, workdir: Path) -> Db:
    """A seeded database for this backend: a kept one when it matches, else a new one."""
    if backend == "sqlite":
        path = workdir / "bench-sqlite.db"
        url = f"sqlite:///{path}"
        location = str(path)
        if path.exists():
            probe = make_engine(url)
            meta = _read_meta(probe)
            probe.dispose()
            if meta != _wanted_meta(args, backend):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        name = _mariadb_name(backend)
        url = make_url(args.mariadb_url).set(database=name, query={"charset": "utf8mb4"}).render_as_string(
            hide_password=False)
        location = f"MariaDB database {name}"
        server = _server_engine(args)
        with server.connect() as conn:
            present = conn.execute(text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"),
                                   {"n": name}).scalar_one()
            if present:
                probe = create_engine(url)
                meta = _read_meta(probe)
                probe.dispose()
                if meta != _wanted_meta(args, backend):
                    conn.exec_driver_sql(f"DROP DATABASE `{name}`")
                    present = 0
            if not present:
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        server.dispose()

    engine = make_engine(url)
    if _read_meta(engine) == _wanted_meta(args, backend):
        migrate_for(backend, engine)  # the code may have gained migrations since the database was kept
        storage = Storage(engine)
        admin = storage.user_by_mm_id("bench-admin")
        member = storage.user_by_mm_id("bench-member")
        assert admin and member
        with engine.connect() as conn:
            # Seeding gives the records consecutive ids; anything past them was written by an `add` timing.
            seeded_max = int(conn.execute(text("SELECT MIN(id) FROM T_CONTENT")).scalar_one()) + args.records - 1
        db = Db(backend, storage, admin, member, seeded_max, reused=True, location=location)
        _remove_added(db)  # in case an interrupted run left its `add` records behind
        _check_backend(db)
        return db
    return seed(backend, engine, args, location)


def apply_statement_timeout(db: Db, seconds: float) -> None:
    """MariaDB: every new connection aborts statements after `seconds` (the pool is emptied first)."""
    if db.dialect != "mysql" or seconds <= 0:
        return
    db.engine.dispose()

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET SESSION max_statement_time = {float(seconds)}")

    event.listen(db.engine, "connect", on_connect)


def _check_backend(db: Db) -> None:
    got = search.detect_backend(db.engine)
    if got != EXPECTED_SEARCH[db.backend] or db.storage.search_backend != got:
        raise SystemExit(f"{db.backend}: storage detects search backend {got!r}, expected "
                         f"{EXPECTED_SEARCH[db.backend]!r} (is the Mroonga plugin installed?)")


def migrate_for(backend: str, engine: Engine) -> None:
    """Migrate to head; "mariadb-like" then loses the Mroonga table, so storage searches without it."""
    migrate.upgrade(engine)
    if backend == "mariadb-like":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {search.MROONGA_TABLE}")


def seed(backend: str, engine: Engine, args: argparse.Namespace, location: str) -> Db:
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    migrate_for(backend, engine)
    storage = Storage(engine)
    phases["migrate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    owners = [storage.ensure_user(f"bench-owner-{i:03d}", f"owner{i:03d}")[0] for i in range(args.owners)]
    admin, _ = storage.ensure_user("bench-admin", "benchadmin", role_if_new="admin")
    member, _ = storage.ensure_user("bench-member", "benchmember")
    step = max(1, len(owners) // GRANTED_OWNERS)
    granted = [o.id for o in owners[::step][:GRANTED_OWNERS]]
    with engine.begin() as conn:
        conn.execute(insert(grant), [{"viewer_id": member.id, "owner_id": o, "granted_by": admin.id,
                                      "created_at": datetime(2023, 1, 1)} for o in granted])
    phases["users"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    corpus = Corpus(args.records, [o.id for o in owners], member.id)
    first_id = 1
    with engine.connect() as conn:
        first_id = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM T_CONTENT")).scalar_one()) + 1
    done = 0
    for rows, tags in corpus.batches(first_id, datetime(2023, 1, 1)):
        with engine.begin() as conn:
            conn.execute(insert(content), rows)
            if tags:
                conn.execute(insert(tag), tags)
        done += len(rows)
        if done % 100_000 == 0:
            print(f"  [{backend}] {done:,} records ({time.perf_counter() - t0:.0f} s)", flush=True)
    phases["records" + (" + FTS5 triggers" if backend == "sqlite" else "")] = time.perf_counter() - t0

    if backend == "mariadb":
        t0 = time.perf_counter()
        got = search.ensure_mroonga(engine)
        assert got == "mroonga", got
        phases["Mroonga fill (ensure_mroonga)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dialect = "sqlite" if engine.dialect.name == "sqlite" else "mysql"
    with engine.begin() as conn:
        for ddl in BASELINE_DDL[dialect]:
            conn.exec_driver_sql(ddl)
        conn.execute(text("INSERT INTO BASE_CONTENT (id, owner_id, body, created_at) "
                          "SELECT id, owner_id, body, created_at FROM T_CONTENT ORDER BY id"))
        perms = {o.id: str(o.id) for o in owners}
        perms[member.id] = ",".join(str(i) for i in [member.id, *granted])
        perms[admin.id] = ""
        users = [*owners, admin, member]
        conn.execute(text("INSERT INTO BASE_USER (id, name, is_admin, perm) VALUES (:id, :name, :adm, :perm)"),
                     [{"id": u.id, "name": u.username, "adm": int(u.is_admin), "perm": perms[u.id]} for u in users])
    phases["baseline copy (not part of seeding)"] = time.perf_counter() - t0

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE BENCH_META (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)")
        conn.execute(text("INSERT INTO BENCH_META (name, value) VALUES (:n, :v)"),
                     [{"n": k, "v": v} for k, v in _wanted_meta(args, backend).items()])
    if dialect == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db = Db(backend, storage, admin, member, first_id + args.records - 1, phases, location=location)
    _check_backend(db)
    return db


def _remove_added(db: Db) -> None:
    """Delete what the `add` timings wrote, so a kept database stays as seeded."""
    top = db.seeded_max_id
    with db.engine.begin() as conn:
        if db.storage.search_backend == "mroonga":
            conn.execute(text(f"DELETE FROM {search.MROONGA_TABLE} WHERE record_id > :m"), {"m": top})
        conn.execute(delete(tag).where(tag.c.record_id > top))
        conn.execute(delete(content).where(content.c.id > top))
        conn.execute(text("DELETE FROM BASE_CONTENT WHERE id > :m"), {"m": top})


def drop_db(db: Db, args: argparse.Namespace) -> None:
    db.engine.dispose()
    if db.backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db.location}{suffix}").unlink(missing_ok=True)
        return
    server = _server_engine(args)
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{_mariadb_name(db.backend)}`")
    server.dispose()


# ---- timing ----------------------------------------------------------------------------------

@dataclass
class Timing:
    samples: list[float]  # ms
    capped: bool = False
    timeout_ms: float | None = None  # set when a call hit the statement timeout: no figures then

    @property
    def median(self) -> float:
        return math.inf if self.timeout_ms is not None else statistics.median(self.samples)

    @property
    def p95(self) -> float:
        if self.timeout_ms is not None:
            return math.inf
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class TimedOut(Exception):
    """A statement ran into MariaDB's max_statement_time (--statement-timeout)."""


def _timed_out(exc: DBAPIError) -> bool:
    return "max_statement_time" in str(exc.orig)


def measure(fn: Callable[[], Any], args: argparse.Namespace, *, warmup: int | None = None) -> Timing:
    """Untimed warm-up calls, then `--repeat` timed ones; fewer (but `--min-repeat`) once `--budget` s are spent."""
    samples: list[float] = []
    try:
        for _ in range(args.warmup if warmup is None else warmup):
            fn()
        spent = 0.0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            samples.append(elapsed * 1000)
            spent += elapsed
            if spent > args.budget and len(samples) >= args.min_repeat:
                break
    except DBAPIError as exc:
        if not _timed_out(exc):
            raise
        return Timing(samples, timeout_ms=args.statement_timeout * 1000)
    return Timing(samples, capped=len(samples) < args.repeat)


@dataclass
class Row:
    query: str
    viewer: str
    plan: str
    new: Timing | None
    base: Timing | None
    kind: str  # find, list, deep, add
    word_class: str  # common, rare, absent, zh-mid, zh-rare, list, add
    note: str = ""
    call: FirstCall | None = None  # the statements storage.find ran, for EXPLAIN

    @property
    def ratio(self) -> float | None:
        if self.new is None or self.base is None or self.new.timeout_ms is not None or self.new.median <= 0:
            return None
        if self.base.timeout_ms is not None:
            return self.base.timeout_ms / self.new.median  # a lower bound
        return self.base.median / self.new.median

    def ratio_text(self) -> str:
        if self.new is not None and self.new.timeout_ms is not None:
            if self.base is not None and self.base.timeout_ms is None:
                return f"< {self.base.median / self.new.timeout_ms:,.2f}x"
            return "n/a"
        ratio = self.ratio
        if ratio is None:
            return "n/a"
        return (">= " if self.base is not None and self.base.timeout_ms is not None else "") + f"{ratio:,.1f}x"


def _unlimited(db: Db, sql: str) -> str:
    """The statement without --statement-timeout (for counts, cursors and plans, which are not timed)."""
    return f"SET STATEMENT max_statement_time=0 FOR {sql}" if db.dialect == "mysql" else sql


@dataclass
class Executed:
    sql: str
    params: Any
    ms: float | None = None  # None: it did not finish (statement timeout)


@dataclass
class FirstCall:
    ids: list[int] | None  # None on a statement timeout
    partial: bool  # storage stopped early (time budget) and handed back a resume point
    statements: list[Executed]

    def slowest(self) -> Executed | None:
        selects = [e for e in self.statements if e.sql.lstrip().upper().startswith("SELECT")]
        unfinished = [e for e in selects if e.ms is None]
        if unfinished:
            return unfinished[0]
        return max(selects, key=lambda e: e.ms or 0.0, default=None)


def first_find(db: Db, viewer: User, flt: Filter, before: int | None) -> FirstCall:
    """One untimed find, recording every statement it sends and how long each took."""
    seen: list[Executed] = []
    started: list[float] = []

    def before_exec(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append(Executed(statement, parameters))
        started.append(time.perf_counter())

    def after_exec(_conn: Any, _cursor: Any, _statement: str, _parameters: Any, _context: Any, _many: bool) -> None:
        seen[-1].ms = (time.perf_counter() - started[-1]) * 1000

    event.listen(db.engine, "before_cursor_execute", before_exec)
    event.listen(db.engine, "after_cursor_execute", after_exec)
    ids: list[int] | None = None
    partial = False
    try:
        page = db.storage.find(viewer, flt, limit=PAGE, before=before)
        ids = [r.id for r in page.records]
        partial = bool(getattr(page, "partial", False))
    except DBAPIError as exc:
        if not _timed_out(exc):
            raise
    finally:
        event.remove(db.engine, "before_cursor_execute", before_exec)
        event.remove(db.engine, "after_cursor_execute", after_exec)
    return FirstCall(ids, partial, seen)


def describe_path(db: Db, plan: search.Plan, words: Sequence[str], before: int | None, call: FirstCall) -> str:
    """The plan storage followed: plan_search's kind, and for "window" what was asked for older records."""
    path = plan.kind
    sqls = [e.sql for e in call.statements]
    if plan.kind == "window" and any("AGAINST" in s or "FTS_VOCAB" in s for s in sqls):
        try:
            with db.engine.connect() as conn:
                top = conn.execute(text("SELECT MAX(id) FROM T_CONTENT")).scalar() or 0
                floor = (before - 1 if before is not None else top) - search.WINDOW
                older = search.older_plan(conn, db.storage.search_backend, [search.fold(w) for w in words], floor)
            path = f"window+{older.kind}"
        except (AttributeError, TypeError):  # the search module changed shape: say what is known
            path = "window+older"
    return f"{path} ({len(sqls)} SQL)" + (" partial" if call.partial else "")


ANALYZE_UP_TO_MS = 3_000  # MariaDB's ANALYZE runs the statement: skipped for slower ones


def explain(db: Db, statement: tuple[str, Any], median_ms: float) -> str:
    sql, params = statement
    out: list[str] = []
    with db.engine.connect() as conn:
        prefixes = ["EXPLAIN QUERY PLAN "] if db.dialect == "sqlite" else ["EXPLAIN "]
        if db.dialect == "mysql":
            if median_ms <= ANALYZE_UP_TO_MS:
                prefixes.append("ANALYZE ")
            else:
                out.append(f"(ANALYZE skipped: the statement takes over {ANALYZE_UP_TO_MS / 1000:.0f} s)")
        for prefix in prefixes:
            result = conn.exec_driver_sql(_unlimited(db, prefix + sql), params)
            out.append(f"-- {prefix.strip()}")
            out.append(" | ".join(result.keys()))
            out.extend(" | ".join("" if v is None else str(v) for v in row) for row in result.all())
    return "\n".join(out)


def explain_call(db: Db, row: Row) -> str:
    """The statements of one find with their times, and the plan of the slowest."""
    assert row.call is not None
    out = [f"[{db.backend}] {row.query} as {row.viewer} (plan {row.plan}); statements of the first call:"]
    for e in row.call.statements:
        took = "timeout" if e.ms is None else f"{e.ms:8.2f} ms"
        out.append(f"  {took:>11}  {' '.join(e.sql.split())[:150]}")
    slow = row.call.slowest()
    if slow is not None:
        out.append(f"slowest statement:\n{slow.sql}\nparams: {slow.params!r}")
        # ANALYZE runs the statement: only when it finished within the limit the first time
        out.append(explain(db, (slow.sql, slow.params), math.inf if slow.ms is None else slow.ms))
    return "\n".join(out)


def _plan_of(db: Db, words: Sequence[str]) -> search.Plan:
    with db.engine.connect() as conn:
        return search.plan_search(conn, db.storage.search_backend, [search.fold(w) for w in words])


def _baseline_params(words: Sequence[str], viewer: User, offset: int = 0) -> dict[str, Any]:
    params: dict[str, Any] = {f"w{i}": f"%{w}%" for i, w in enumerate(words)}
    params.update(viewer=viewer.id, off=offset)
    return params


def _baseline_ids(db: Db, words: Sequence[str], viewer: User, offset: int, limit: int = PAGE) -> list[int]:
    sql = _unlimited(db, baseline_sql(db.dialect, words, limit=limit))
    with db.engine.connect() as conn:
        return [r.id for r in conn.execute(text(sql), _baseline_params(words, viewer, offset))]


QUERIES = [
    # label, word class, words
    (f"find common '{COMMON}'", "common", (COMMON,)),
    (f"find rare '{RARE_EN}'", "rare", (RARE_EN,)),
    (f"find absent '{ABSENT}'", "absent", (ABSENT,)),
    (f"find zh-mid '{ZH_MID}'", "zh-mid", (ZH_MID,)),
    (f"find zh-rare '{RARE_ZH}'", "zh-rare", (RARE_ZH,)),
    ("list", "list", ()),
]
DEEP = ("common", "zh-mid", "list")  # also timed at page DEEP_PAGE


def run_queries(db: Db, args: argparse.Namespace, log: Callable[[str], None]) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    viewers = (("member", db.member), ("admin", db.admin))
    for label, word_class, words in QUERIES:
        flt = Filter(words=words)
        plan = _plan_of(db, words)
        detail = plan.match if len(plan.match) <= 70 else plan.match[:67] + "..."
        # Match counts from the baseline copy (same rows): Storage.count stops counting at a cap.
        counts = {}
        with db.engine.connect() as conn:
            for name, v in viewers:
                sql = _unlimited(db, baseline_sql(db.dialect, words, count=True))
                counts[name] = int(conn.execute(text(sql), _baseline_params(words, v)).scalar_one())
        notes.append(f"{label}: plan {plan.kind}{' ' + detail if detail else ''}; matches admin "
                     f"{counts['admin']:,}, member {counts['member']:,}")
        for vname, viewer in viewers:
            for deep in (False, True):
                if deep and word_class not in DEEP:
                    continue
                name = f"{label} p{DEEP_PAGE}" if deep else label
                offset = (DEEP_PAGE - 1) * PAGE if deep else 0
                before = None
                if deep:
                    if counts[vname] <= offset:
                        rows.append(Row(name, vname, plan.kind, None, None, "deep", word_class,
                                        note=f"fewer than {DEEP_PAGE} pages"))
                        continue
                    # The keyset cursor of page 50 is the id of the last record of page 49.
                    before = _baseline_ids(db, words, viewer, offset - 1, limit=1)[0]

                # The first, untimed call checks the page against the baseline and keeps the SQL for EXPLAIN.
                call = first_find(db, viewer, flt, before)
                new_ids = call.ids
                path = describe_path(db, plan, words, before, call)
                old_ids = _baseline_ids(db, words, viewer, offset)
                if new_ids is not None and new_ids != (old_ids[:len(new_ids)] if call.partial else old_ids):
                    notes.append(f"!! {name} as {vname}: find returned {new_ids}, baseline {old_ids}")
                if call.partial:
                    notes.append(f"{name} as {vname}: storage returned a partial page ({len(new_ids or [])} of "
                                 f"{len(old_ids)} records) and a resume point; the time is that of this first request")

                def new_call(viewer: User = viewer, flt: Filter = flt, before: int | None = before) -> None:
                    db.storage.find(viewer, flt, limit=PAGE, before=before)

                sql = baseline_sql(db.dialect, words)
                params = _baseline_params(words, viewer, offset)

                def base_call(sql: str = sql, params: dict[str, Any] = params) -> None:
                    with db.engine.connect() as conn:
                        conn.execute(text(sql), params).all()

                if new_ids is None:
                    new = Timing([], timeout_ms=args.statement_timeout * 1000)
                else:
                    new = measure(new_call, args, warmup=max(0, args.warmup - 1))
                base = measure(base_call, args)
                row = Row(name, vname, path, new, base, "deep" if deep else ("list" if not words else "find"),
                          word_class, call=call)
                rows.append(row)
                log(f"  [{db.backend}] {name} as {vname}: {path}, median {_fmt_ms(new, 'median')}, "
                    f"p95 {_fmt_ms(new, 'p95')}; baseline median {_fmt_ms(base, 'median')}")

    # add: one record per call through Storage, against one INSERT on the old table
    corpus = Corpus(1, [db.member.id], db.member.id)
    corpus.rng = random.Random(7)

    def add_call() -> None:
        db.storage.add_record(db.member, corpus.body())

    def base_add() -> None:
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO BASE_CONTENT (owner_id, body, created_at) VALUES (:o, :b, :t)"),
                         {"o": db.member.id, "b": corpus.body(), "t": datetime.now()})

    try:
        new = measure(add_call, args)
        base = measure(base_add, args)
    finally:
        _remove_added(db)
    rows.append(Row("add (Storage.add_record)", "member", "-", new, base, "add", "add"))
    log(f"  [{db.backend}] add: median {_fmt_ms(new, 'median')}, p95 {_fmt_ms(new, 'p95')}")
    return rows, notes


def _fmt_ms(timing: Timing, what: str) -> str:
    if timing.timeout_ms is not None:
        return f"timeout (> {timing.timeout_ms / 1000:g} s)"
    return f"{getattr(timing, what):.2f} ms"


# ---- report ----------------------------------------------------------------------------------

HEAD = ("query", "viewer", "plan", "median ms", "p95 ms", "baseline median ms", "ratio (baseline/new)")


def _cell(timing: Timing, what: str) -> str:
    if timing.timeout_ms is not None:
        return f"timeout > {timing.timeout_ms:.0f}"
    value = getattr(timing, what)
    return (f"{value:.2f}" if value < 100 else f"{value:.0f}") + ("*" if timing.capped else "")


def table_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        if r.new is None or r.base is None:
            out.append((r.query, r.viewer, r.plan, "n/a", "n/a", "n/a", r.note))
            continue
        out.append((r.query, r.viewer, r.plan, _cell(r.new, "median"), _cell(r.new, "p95"), _cell(r.base, "median"),
                    r.ratio_text()))
    return out


def plain_table(rows: Sequence[Row]) -> str:
    cells = [HEAD, *table_cells(rows)]
    widths = [max(_width(c[i]) for c in cells) for i in range(len(HEAD))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(_pad(v, widths[i], right=i >= 3) for i, v in enumerate(c)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _width(s: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in s)  # CJK takes two columns in a terminal


def _pad(s: str, width: int, *, right: bool) -> str:
    gap = " " * (width - _width(s))
    return gap + s if right else s + gap


def markdown_table(rows: Sequence[Row]) -> str:
    rule = "|" + "|".join("---:" if i >= 3 else "---" for i in range(len(HEAD))) + "|"
    lines = ["| " + " | ".join(HEAD) + " |", rule]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table_cells(rows)]
    return "\n".join(lines)


def _capped_note(rows: Sequence[Row], args: argparse.Namespace) -> str:
    """Which figures rest on fewer than --repeat timed runs, and on how many."""
    capped = []
    for r in rows:
        for side, timing in (("new", r.new), ("baseline", r.base)):
            if timing is not None and timing.capped:
                capped.append(f"{r.query} as {r.viewer} ({side}): {len(timing.samples)}")
    if not capped:
        return ""
    return (f"* fewer than {args.repeat} timed runs (the {args.budget:.0f} s budget per query ran out); runs: "
            + "; ".join(capped))


@dataclass
class Target:
    backend: str
    name: str
    passed: bool
    figure: str
    misses: list[Row]


def evaluate(backend: str, rows: Sequence[Row]) -> list[Target]:
    finds = [r for r in rows if r.kind in ("find", "list", "deep") and r.new is not None]
    targets: list[Target] = []
    limit = {"sqlite": 20.0, "mariadb": 50.0, "mariadb-like": 500.0}[backend]
    what = {"sqlite": "SQLite p95 <= 20 ms for every find",
            "mariadb": "MariaDB + Mroonga worst p95 <= 50 ms",
            "mariadb-like": "MariaDB without accelerator worst p95 <= 500 ms"}[backend]
    if finds:
        worst = max(finds, key=lambda r: r.new.p95)  # type: ignore[union-attr]
        misses = [r for r in finds if r.new.p95 > limit]  # type: ignore[union-attr]
        targets.append(Target(backend, what, not misses,
                              f"worst p95 {_fmt_ms(worst.new, 'p95')} ({worst.query}, {worst.viewer})",  # type: ignore[arg-type]
                              misses))
    rare = [r for r in rows if r.word_class in ("rare", "absent", "zh-rare") and r.new is not None]
    if rare:
        low = min(rare, key=lambda r: -1.0 if r.ratio is None else r.ratio)
        misses = [r for r in rare if r.ratio is None or r.ratio < 20]
        targets.append(Target(backend, ">= 20x faster than baseline on rare and absent words", not misses,
                              f"lowest ratio {low.ratio_text()} ({low.query}, {low.viewer})", misses))
    return targets


def code_version() -> str:
    """Which recbot code was measured: the commit, and a digest of the storage and search modules as they are."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = [root / "bot/storage.py", root / "bot/tables.py", *sorted((root / "bot/store").glob("*.py")),
             *sorted((root / "bot/search").glob("*.py"))]
    for path in files:
        digest.update(path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bot"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head, dirty = "unknown", ""
    return f"commit {head}{' + uncommitted changes in bot/' if dirty else ''}, storage/search/tables sha256 " \
        f"{digest.hexdigest()[:12]}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=200)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: " + ",".join(BACKENDS))
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per query, after 2 warm-up runs")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before the timed ones")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed runs per query after which repeats stop (at least --min-repeat "
                             "are kept; such figures are marked *)")
    parser.add_argument("--min-repeat", type=int, default=5, help="timed runs kept however slow the query is")
    parser.add_argument("--statement-timeout", type=float, default=30.0,
                        help="MariaDB: abort a timed statement after this many seconds (max_statement_time) and "
                             "report the query as a timeout; 0 for none")
    parser.add_argument("--mariadb-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--workdir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases for the next run")
    parser.add_argument("--explain-all", action="store_true", help="print the plan of every find, not only misses")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.records < RARE_EN_COUNT + RARE_ZH_COUNT or args.owners < GRANTED_OWNERS or args.repeat < 1 \
            or args.min_repeat < 1 or args.warmup < 0:
        parser.error(f"need --records >= {RARE_EN_COUNT + RARE_ZH_COUNT}, --owners >= {GRANTED_OWNERS}, "
                     "--repeat >= 1, --min-repeat >= 1, --warmup >= 0")

    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="recbot-bench-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"recbot storage benchmark: {args.records:,} records, {args.owners} owners, repeat {args.repeat} "
        f"(+{args.warmup} warm-up, budget {args.budget:.0f} s/query, at least {args.min_repeat}), page {PAGE}, "
        f"backends {', '.join(backends)}")
    log(f"python {platform.python_version()}, sqlite {__import__('sqlite3').sqlite_version}, workdir {workdir}")
    version = code_version()
    log(f"recbot code: {version}")
    log(f"words: common '{COMMON}', rare '{RARE_EN}' (seeded in {RARE_EN_COUNT}), absent '{ABSENT}', "
        f"zh-mid '{ZH_MID}' (Chinese rank {ZH_MID_RANK}), zh-rare '{RARE_ZH}' (seeded in {RARE_ZH_COUNT})")

    results: dict[str, tuple[Db, list[Row], list[str]]] = {}
    dbs: list[Db] = []
    try:
        for backend in backends:
            log(f"\n== {backend}: preparing")
            t0 = time.perf_counter()
            db = open_db(backend, args, workdir)
            dbs.append(db)
            apply_statement_timeout(db, args.statement_timeout)
            if db.reused:
                log(f"  reused the kept, already seeded {db.location} ({time.perf_counter() - t0:.1f} s)")
            else:
                log(f"  seeded {db.location}:")
                for phase, secs in db.phases.items():
                    log(f"    {phase:<40} {secs:8.1f} s")
                seeding = sum(s for p, s in db.phases.items() if not p.startswith("baseline"))
                log(f"    {'seeding total':<40} {seeding:8.1f} s  ({args.records / max(seeding, 1e-9):,.0f} records/s)")
            if db.dialect == "mysql":
                with db.engine.connect() as conn:
                    server_version, pool = conn.execute(text("SELECT VERSION(), @@innodb_buffer_pool_size")).one()
                log(f"  server {server_version}, innodb_buffer_pool_size {int(pool) // 2**20} MiB")
            log(f"== {backend}: timing (load average {_load()})")
            rows, notes = run_queries(db, args, log)
            notes.append(f"load average after timing: {_load()} (on {os.cpu_count()} CPUs; other work on the "
                         "machine or the database server skews the figures)")
            results[backend] = (db, rows, notes)

        report: list[str] = []
        targets: list[Target] = []
        for backend, (db, rows, notes) in results.items():
            log(f"\n== {backend} ({args.records:,} records, search backend {db.storage.search_backend})")
            for note in notes:
                log("  " + note)
            log(plain_table(rows))
            capped = _capped_note(rows, args)
            if capped:
                log("  " + capped)
            got = evaluate(backend, rows)
            targets += got
            report.append(f"### {backend} — {args.records:,} records (search backend `{db.storage.search_backend}`)")
            report.append("")
            if db.phases:
                report.append("Seeding: " + ", ".join(f"{p} {s:.1f} s" for p, s in db.phases.items()))
                report.append("")
            report.append(markdown_table(rows))
            report.append("")
            report.extend(f"- {n}" for n in notes)
            if capped:
                report.append(f"- {capped}")
            report.append("")

        log("\n== targets")
        summary = []
        for t in targets:
            line = f"{'PASS' if t.passed else 'MISS'}  [{t.backend}] {t.name}: {t.figure}"
            log(line)
            summary.append(f"- **{'PASS' if t.passed else 'MISS'}** [{t.backend}] {t.name}: {t.figure}")
            for r in t.misses:
                log(f"      miss: {r.query} as {r.viewer}, plan {r.plan}: p95 "
                    f"{_fmt_ms(r.new, 'p95') if r.new else 'n/a'}, ratio {r.ratio_text()}")

        explained = []
        for backend, (db, rows, _notes) in results.items():
            missed = {(r.query, r.viewer) for t in targets if t.backend == backend for r in t.misses}
            for r in rows:
                if r.call and (args.explain_all or (r.query, r.viewer) in missed):
                    explained.append(explain_call(db, r))
        if explained:
            log("\n== query plans of storage.find" + (" (misses)" if not args.explain_all else ""))
            for block in explained:
                log(block + "\n")

        log("\n== markdown\n")
        log(f"Storage benchmark, {args.records:,} records, {args.owners} owners, repeat {args.repeat} "
            f"(+{args.warmup} warm-up), "
            f"page {PAGE}; medians and p95 in ms; baseline = old LIKE + FIND_IN_SET + OFFSET query; "
            f"recbot code: {version}.\n")
        log("\n".join(report))
        log("Targets:\n")
        log("\n".join(summary))
        return 0 if all(t.passed for t in targets) else 1
    finally:
        for db in dbs:
            if args.keep:
                db.engine.dispose()
            else:
                drop_db(db, args)
        if temp and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"\nkept: {', '.join(db.location for db in dbs)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
