//! Where a run waits: for the processors and the sink to be ready, and for the last
//! derived row to be in Postgres.

use super::*;

/// Where a run waits for its rows.
pub(super) struct Waits<'a> {
    pub(super) runtime: &'a tokio::runtime::Runtime,
    pub(super) pool: &'a PgPool,
    pub(super) logs: &'a std::path::Path,
    /// The programs whose rows are awaited: one that ended ends the wait.
    pub(super) services: &'a [Service],
}

impl Waits<'_> {
    /// Posts the fiscal year `year` of `shape` and follows it through every phase: the
    /// year up to the close; the stewards' approval of each proposed set by its hash (read
    /// from Postgres); the bank's settlement of every distribution that fell due; until
    /// every distribution of the year is complete. Returns the seconds of the first phase
    /// (first post → the last proposed set in Postgres).
    pub(super) fn year(&self, poster: &mut Poster, shape: Shape, year: i32) -> Result<f64> {
        let tenants = format!("{}%", shape.prefix);
        let period = year.to_string();
        let started = Instant::now();
        poster.track(&format!("year {year}"), shape.year_events());
        load::post_period(poster, shape, year)?;
        poster.settle()?;
        poster.finish();
        let sets: Vec<(String, String)> =
            self.rows(shape.tenants, "the proposed allocation sets", || {
                sqlx::query_as(
                    "SELECT tenant_id, set_hash FROM habitat.allocation_sets
                      WHERE period_id = $1 AND status = 'PROPOSED' AND tenant_id LIKE $2",
                )
                .bind(&period)
                .bind(&tenants)
            })?;
        let year_seconds = started.elapsed().as_secs_f64();
        for (tenant, hash) in &sets {
            poster.post(load::approval_of(tenant, &period, hash))?;
        }
        poster.settle()?;
        let due: Vec<(String, String)> = self.rows(
            shape.tenants * shape.members,
            "the distributions to fall due",
            || {
                sqlx::query_as(
                    "SELECT tenant_id, payment_id FROM habitat.payments
                      WHERE purpose = 'DISTRIBUTION' AND status = 'DUE' AND tenant_id LIKE $1",
                )
                .bind(&tenants)
            },
        )?;
        for (tenant, payment) in &due {
            poster.post(load::settlement(tenant, payment))?;
        }
        poster.settle()?;
        let _completed: Vec<(String,)> = self.rows(
            shape.tenants * shape.members,
            "every distribution to complete",
            || {
                sqlx::query_as(
                    "SELECT distribution_id FROM habitat.distributions
                      WHERE tenant_id LIKE $1 AND period_id = $2",
                )
                .bind(&tenants)
                .bind(&period)
            },
        )?;
        Ok(year_seconds)
    }

    /// Polls `query` until it returns `expected` rows.
    pub(super) fn rows<'q, T, F>(&self, expected: usize, what: &str, query: F) -> Result<Vec<T>>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
        F: Fn() -> sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>,
    {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut progress = Progress::counted(what, expected as u64, "rows written");
        loop {
            let rows = self
                .runtime
                .block_on(query().fetch_all(self.pool))
                .unwrap_or_default();
            progress.set(rows.len() as u64);
            if rows.len() >= expected {
                progress.finish("done");
                return Ok(rows);
            }
            if let Some(gone) = self.services.iter().find(|s| s.exited()) {
                bail!(
                    "{} exited while waiting for {what} (its log is in {})",
                    gone.name,
                    self.logs.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "waited 600 s for {what}: {} of {expected} (logs in {})",
                    rows.len(),
                    self.logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `event_log`'s row count once it has not changed for half a second.
pub(super) fn quiet_count(runtime: &tokio::runtime::Runtime, pool: &PgPool) -> Result<i64> {
    let count = || -> Result<i64> {
        Ok(runtime.block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM habitat.event_log WHERE tenant_id NOT LIKE $1",
            )
            .bind(format!("{}%", WARM_UP.prefix))
            .fetch_one(pool),
        )?)
    };
    let mut last = count()?;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = count()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}
