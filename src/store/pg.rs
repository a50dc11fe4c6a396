//! The store's PostgreSQL backend: the same ordered key space as the
//! embedded engine, one row a key (`kv(k bytea PRIMARY KEY, v bytea)`), so
//! that any number of nodes can share it.
//!
//! The store reads synchronously (a command reads while it decides what to
//! write), so the connections live on threads of their own and a caller
//! blocks on the answer: a pool of [`Pg::open`]'s `pool` connections for
//! reads and standalone writes, and one connection for [`Tx`], the writes
//! of [`crate::store::Store::write`]. This works under any tokio runtime
//! (a blocking client must not run on a runtime thread).
//!
//! # Invariants
//! - A [`Tx`] holds the cluster-wide write lock (`pg_advisory_xact_lock`)
//!   from [`Pg::begin`] to its commit or rollback: every node's writes are
//!   serialised, so an organization's `seq`, read and written inside one,
//!   stays gap-free across nodes, and the reads a write makes (on any
//!   connection, read committed) see every earlier write.
//! - A batch is one transaction; its operations are applied in key order,
//!   so concurrent transactions lock rows in one order (no deadlock).
//! - Schema changes are versioned migrations (`src/store/migrations/`),
//!   applied once, in order, under an advisory lock, when a node opens the
//!   store; `convgate_migrations` records what was applied.

use super::engine::Batch;
use super::StoreError;
use postgres::{Client, NoTls, Statement};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The migrations, in order: `(version, SQL)`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_kv.sql")),
    (2, include_str!("migrations/0002_leases.sql")),
    (3, include_str!("migrations/0003_rate_limits.sql")),
];

/// Advisory lock keys (`pg_advisory_lock(bigint)`), "convgate" in ASCII and
/// one more.
const WRITE_LOCK: i64 = 0x636f_6e76_6761_7465;
const MIGRATION_LOCK: i64 = WRITE_LOCK + 1;

/// Rows a range read fetches at first; each later page doubles, up to
/// [`MAX_PAGE`] (most scans stop after a few records).
const FIRST_PAGE: i64 = 32;
const MAX_PAGE: i64 = 1024;

/// A job for a connection's thread.
type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// One connection and its prepared statements.
pub(super) struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
    /// How many times this thread connected: a [`Tx`] begun on an earlier
    /// connection cannot commit on this one (its lock and writes are gone).
    generation: u64,
}

impl Conn {
    fn connect(url: &str) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: Client::connect(url, NoTls)?,
            prepared: HashMap::new(),
            generation: 0,
        })
    }

    /// Connects again if PostgreSQL closed the connection (a restart, a
    /// failover): the node recovers without a restart of its own.
    fn heal(&mut self, url: &str) {
        if !self.client.is_closed() {
            return;
        }
        match Conn::connect(url) {
            Ok(fresh) => {
                let generation = self.generation + 1;
                *self = Conn {
                    generation,
                    ..fresh
                };
                tracing::warn!("store: reconnected to PostgreSQL");
            }
            Err(e) => tracing::error!(error = %e, "store: reconnecting to PostgreSQL failed"),
        }
    }

    /// The statement for `sql`, prepared once per connection.
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }
}

/// A pool of connections on their own threads.
struct Threads {
    jobs: mpsc::Sender<Job>,
}

impl Threads {
    /// Starts `n` threads, each with its own connection to `url`.
    fn start(url: &str, n: usize, name: &str) -> Result<Threads, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let conn = Conn::connect(url).map_err(pg)?;
            let rx = rx.clone();
            let url = url.to_string();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let mut conn = conn;
                    loop {
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        conn.heal(&url);
                        job(&mut conn);
                    }
                })
                .map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        Ok(Threads { jobs: tx })
    }

    /// Runs `f` on one of the connections and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?.map_err(pg)
    }

    /// Queues `f` without waiting for it.
    fn spawn(&self, f: impl FnOnce(&mut Conn) + Send + 'static) {
        let _ = self.jobs.send(Box::new(f));
    }
}

/// The PostgreSQL backend. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub(super) struct Pg {
    inner: Arc<PgInner>,
}

struct PgInner {
    pool: Threads,
    /// The connection of [`Tx`]s: one at a time (the caller serialises them).
    tx: Threads,
    /// The connection of leases: never queued behind reads,
    /// so that a renewal is not late because the node is busy.
    control: Threads,
}

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Pg {
    /// Connects `pool` + 2 connections to `url` (a libpq URL or key=value
    /// string, e.g. `postgres://convgate@127.0.0.1:5432/convgate`) and
    /// applies the migrations this binary has and the database lacks.
    ///
    /// Errors: [`StoreError::Backend`] when PostgreSQL does not answer or a
    /// migration fails. Blocking; call outside the runtime's threads or
    /// through `spawn_blocking`.
    pub(super) fn open(url: &str, pool: usize) -> Result<Pg, StoreError> {
        migrate(url)?;
        Ok(Pg {
            inner: Arc::new(PgInner {
                pool: Threads::start(url, pool, "convgate-pg")?,
                tx: Threads::start(url, 1, "convgate-pg-tx")?,
                control: Threads::start(url, 1, "convgate-pg-control")?,
            }),
        })
    }

    /// The value of `key`.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let key = key.to_vec();
        self.inner.pool.call(move |c| {
            let s = c.stmt("SELECT v FROM kv WHERE k = $1")?;
            let row = c.client.query_opt(&s, &[&key])?;
            Ok(row.map(|r| sled::IVec::from(r.get::<_, &[u8]>(0))))
        })
    }

    /// The records in `range`, in key order from either end, read a page
    /// at a time.
    pub(super) fn range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Iter {
        // Every range becomes [lo, hi): `> x` is `>= x\0`, `<= y` is `< y\0`.
        let lo = match lo {
            Bound::Included(k) => k.to_vec(),
            Bound::Excluded(k) => [k, &[0]].concat(),
            Bound::Unbounded => Vec::new(),
        };
        let hi = match hi {
            Bound::Included(k) => Some([k, &[0]].concat()),
            Bound::Excluded(k) => Some(k.to_vec()),
            Bound::Unbounded => None,
        };
        Iter {
            pg: self.clone(),
            lo,
            hi,
            front: VecDeque::new(),
            back: VecDeque::new(),
            page: FIRST_PAGE,
            done: false,
        }
    }

    /// Applies `batch` as one transaction (no cluster lock: the writes that
    /// need one go through [`Tx`]).
    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.pool.call(move |c| {
            let mut t = c.client.transaction()?;
            apply(&mut t, batch)?;
            t.commit()
        })
    }

    /// Sets `key` to `value` unless it is set; returns the value it keeps.
    pub(super) fn insert_new(&self, key: &[u8], value: &[u8]) -> Result<sled::IVec, StoreError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.inner.pool.call(move |c| {
            let s = c.stmt(
                "WITH ins AS (INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING RETURNING v) \
                 SELECT v FROM ins UNION ALL SELECT v FROM kv WHERE k = $1 LIMIT 1",
            )?;
            let row = c.client.query_one(&s, &[&key, &value])?;
            Ok(sled::IVec::from(row.get::<_, &[u8]>(0)))
        })
    }

    /// Takes or renews lease `name` for `holder` until `ttl_ms` from now
    /// (PostgreSQL's clock); `false` while another holder's lease runs.
    /// On its own connection (`urgent`: the workers' lease, never queued
    /// behind reads) or the pool's (per-request claims).
    pub(super) fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: f64,
        urgent: bool,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let threads = if urgent {
            &self.inner.control
        } else {
            &self.inner.pool
        };
        threads.call(move |c| {
            let s = c.stmt(
                "INSERT INTO convgate_leases (name, holder, expires_at) \
                 VALUES ($1, $2, now() + $3::float8 * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                 WHERE convgate_leases.holder = EXCLUDED.holder OR convgate_leases.expires_at < now() \
                 RETURNING holder",
            )?;
            Ok(c.client.query_opt(&s, &[&name, &holder, &ttl_ms])?.is_some())
        })
    }

    /// Takes one unit of rate limit `key` (GCRA: one unit every
    /// `interval_ms`, `tolerance_ms` of burst), by PostgreSQL's clock.
    /// `Ok(ahead)`: taken, the key's schedule now runs `ahead` ms past now;
    /// `Err(wait)`: refused, the ms until a unit is free.
    pub(super) fn gcra(
        &self,
        key: &str,
        interval_ms: f64,
        tolerance_ms: f64,
    ) -> Result<Result<f64, f64>, StoreError> {
        let key = key.to_string();
        self.inner.pool.call(move |c| {
            let s = c.stmt(
                "WITH cur AS (SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS now) \
                 INSERT INTO convgate_rate_limits AS l (key, tat) \
                 SELECT $1, cur.now + $2::float8 FROM cur \
                 ON CONFLICT (key) DO UPDATE SET tat = greatest(l.tat, (SELECT now FROM cur)) + $2::float8 \
                 WHERE greatest(l.tat, (SELECT now FROM cur)) - (SELECT now FROM cur) <= $3::float8 \
                 RETURNING tat - (SELECT now FROM cur)",
            )?;
            let key_ = key.clone();
            if let Some(row) = c.client.query_opt(&s, &[&key_, &interval_ms, &tolerance_ms])? {
                return Ok(Ok(row.get::<_, f64>(0)));
            }
            let s = c.stmt(
                "SELECT tat - extract(epoch FROM clock_timestamp())::float8 * 1000 FROM convgate_rate_limits WHERE key = $1",
            )?;
            let ahead = c
                .client
                .query_opt(&s, &[&key])?
                .map_or(0.0, |r| r.get::<_, f64>(0));
            Ok(Err((ahead - tolerance_ms).max(0.0)))
        })
    }

    /// Drops rate-limit keys whose budget is full again, and leases
    /// (claims a crashed node never gave up) expired for an hour.
    pub(super) fn shrink_rates(&self) -> Result<u64, StoreError> {
        self.inner.pool.call(|c| {
            let rates = c.client.execute(
                "DELETE FROM convgate_rate_limits WHERE tat < extract(epoch FROM clock_timestamp())::float8 * 1000",
                &[],
            )?;
            let leases = c.client.execute(
                "DELETE FROM convgate_leases WHERE expires_at < now() - interval '1 hour'",
                &[],
            )?;
            Ok(rates + leases)
        })
    }

    /// Gives up lease `name` if `holder` has it (another node may take it
    /// at once).
    pub(super) fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.inner.pool.call(move |c| {
            c.client.execute(
                "DELETE FROM convgate_leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )?;
            Ok(())
        })
    }

    /// Begins a write holding the cluster-wide write lock. The caller must
    /// not begin another before this one is committed or dropped.
    pub(super) fn begin(&self) -> Result<Tx, StoreError> {
        let generation = self.inner.tx.call(|c| {
            c.client.batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            ))?;
            Ok(c.generation)
        })?;
        Ok(Tx {
            pg: self.clone(),
            open: true,
            generation,
        })
    }

    /// How many keys the database holds by kind, the key's first segment
    /// (`convgate migrate` verifies a copy with it).
    pub(super) fn count_by_kind(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.inner.pool.call(|c| {
            let rows = c.client.query(
                "SELECT CASE WHEN position('/'::bytea in k) = 0 THEN k \
                 ELSE substring(k from 1 for position('/'::bytea in k) - 1) END, count(*) \
                 FROM kv GROUP BY 1",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    let kind = String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned();
                    (kind, r.get::<_, i64>(1) as u64)
                })
                .collect())
        })
    }

    /// Whether the database holds no key at all.
    pub(super) fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.pool.call(|c| {
            let row = c
                .client
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM kv)", &[])?;
            Ok(row.get::<_, bool>(0))
        })
    }

    /// One page of `[lo, hi)`, forward or backward.
    fn page(
        &self,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        self.inner.pool.call(move |c| {
            let rows = match (&hi, forward) {
                (None, true) => {
                    let s = c.stmt("SELECT k, v FROM kv WHERE k >= $1 ORDER BY k LIMIT $2")?;
                    c.client.query(&s, &[&lo, &limit])?
                }
                (None, false) => {
                    let s = c.stmt("SELECT k, v FROM kv WHERE k >= $1 ORDER BY k DESC LIMIT $2")?;
                    c.client.query(&s, &[&lo, &limit])?
                }
                (Some(hi), true) => {
                    let s =
                        c.stmt("SELECT k, v FROM kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3")?;
                    c.client.query(&s, &[&lo, hi, &limit])?
                }
                (Some(hi), false) => {
                    let s = c.stmt(
                        "SELECT k, v FROM kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3",
                    )?;
                    c.client.query(&s, &[&lo, hi, &limit])?
                }
            };
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        sled::IVec::from(r.get::<_, &[u8]>(0)),
                        sled::IVec::from(r.get::<_, &[u8]>(1)),
                    )
                })
                .collect())
        })
    }
}

/// Applies `batch`'s operations in key order (the last on a key wins).
fn apply(t: &mut impl postgres::GenericClient, batch: Batch) -> Result<(), postgres::Error> {
    let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for (k, v) in batch.into_ops() {
        last.insert(k.to_vec(), v.map(|v| v.to_vec()));
    }
    let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => gone.push(k),
        }
    }
    if !keys.is_empty() {
        t.execute(
            "INSERT INTO kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            &[&keys, &values],
        )?;
    }
    if !gone.is_empty() {
        t.execute("DELETE FROM kv WHERE k = ANY($1)", &[&gone])?;
    }
    Ok(())
}

/// Applies the migrations `url`'s database lacks, under an advisory lock
/// (nodes starting together apply each once).
fn migrate(url: &str) -> Result<(), StoreError> {
    let mut c = Client::connect(url, NoTls).map_err(pg)?;
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    let res = (|| {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS convgate_migrations (\
               version integer PRIMARY KEY, \
               applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        let row = c.query_one(
            "SELECT coalesce(max(version), 0) FROM convgate_migrations",
            &[],
        )?;
        let have: i32 = row.get(0);
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > have) {
            let mut t = c.transaction()?;
            t.batch_execute(sql)?;
            t.execute(
                "INSERT INTO convgate_migrations (version) VALUES ($1)",
                &[version],
            )?;
            t.commit()?;
            tracing::info!(version, "store migration applied");
        }
        Ok(())
    })();
    let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    res.map_err(pg)
}

/// A write holding the cluster-wide write lock: committed with
/// [`Tx::commit`], rolled back when dropped uncommitted.
pub(super) struct Tx {
    pg: Pg,
    open: bool,
    /// The connection's generation at [`Pg::begin`].
    generation: u64,
}

impl Tx {
    /// Applies `batch` inside the transaction, not yet committed.
    pub(super) fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let generation = self.generation;
        self.pg.inner.tx.call(move |c| {
            if let Err(e) = same_connection(c, generation) {
                return Ok(Err(e));
            }
            apply(&mut c.client, batch).map(Ok)
        })?
    }

    /// Applies `batch` and commits: durable (PostgreSQL's commit) when this
    /// returns `Ok`. Releases the write lock either way.
    pub(super) fn commit(mut self, batch: Batch) -> Result<(), StoreError> {
        self.open = false;
        let generation = self.generation;
        self.pg.inner.tx.call(move |c| {
            if let Err(e) = same_connection(c, generation) {
                return Ok(Err(e));
            }
            let res = (|| {
                // The transaction [`Pg::begin`] opened is still open on
                // this connection.
                apply(&mut c.client, batch)?;
                c.client.batch_execute("COMMIT")
            })();
            if res.is_err() {
                let _ = c.client.batch_execute("ROLLBACK");
            }
            res.map(Ok)
        })?
    }
}

/// Errs when the connection was made again since the transaction began:
/// PostgreSQL rolled it back (and released its lock) when the old one
/// closed, so nothing of it may be written on the new one.
fn same_connection(c: &Conn, generation: u64) -> Result<(), StoreError> {
    match c.generation == generation {
        true => Ok(()),
        false => Err(StoreError::Backend(
            "the connection to PostgreSQL was lost in the middle of a write; it was rolled back"
                .into(),
        )),
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            self.pg.inner.tx.spawn(|c| {
                let _ = c.client.batch_execute("ROLLBACK");
            });
        }
    }
}

/// Records of a range, in key order from either end, fetched a page at a
/// time; the two ends never pass each other.
pub(super) struct Iter {
    pg: Pg,
    /// What is left to read: `[lo, hi)` minus what the buffers hold.
    lo: Vec<u8>,
    hi: Option<Vec<u8>>,
    front: VecDeque<(sled::IVec, sled::IVec)>,
    back: VecDeque<(sled::IVec, sled::IVec)>,
    page: i64,
    /// Nothing is left between the buffers.
    done: bool,
}

impl Iter {
    /// Refills the buffer of one end with the next page.
    fn fill(&mut self, forward: bool) -> Result<(), StoreError> {
        if self.done {
            return Ok(());
        }
        let rows = self
            .pg
            .page(self.lo.clone(), self.hi.clone(), forward, self.page)?;
        if (rows.len() as i64) < self.page {
            self.done = true;
        }
        self.page = (self.page * 2).min(MAX_PAGE);
        match (forward, rows.last()) {
            (true, Some((k, _))) => self.lo = [k.as_ref(), &[0]].concat(),
            (false, Some((k, _))) => self.hi = Some(k.to_vec()),
            (_, None) => {}
        }
        match forward {
            true => self.front.extend(rows),
            false => self.back.extend(rows),
        }
        Ok(())
    }

    fn advance(&mut self, forward: bool) -> Option<Result<(sled::IVec, sled::IVec), StoreError>> {
        let mine = if forward { &self.front } else { &self.back };
        if mine.is_empty() && !self.done {
            if let Err(e) = self.fill(forward) {
                self.done = true;
                return Some(Err(e));
            }
        }
        // Once the middle is read, each end takes what the other buffered.
        match forward {
            true => self.front.pop_front().or_else(|| self.back.pop_back()),
            false => self.back.pop_front().or_else(|| self.front.pop_back()),
        }
        .map(Ok)
    }
}

impl Iterator for Iter {
    type Item = Result<(sled::IVec, sled::IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(true)
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.advance(false)
    }
}
