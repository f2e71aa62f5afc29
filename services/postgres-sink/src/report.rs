//! The finance reports: each a view of the sink's schema, exported as CSV or JSON.
//!
//! Reports run in a read-only transaction as the `habitat_finance` role when the
//! connecting user may take it, so an export sees exactly what finance sees. Every value
//! is exported as Postgres prints it — money keeps its two decimals, never a float.

use serde_json::{Map, Value};
use sqlx::{PgPool, Row};

use crate::tables::ident;

/// A report, the view behind it, the filters it takes and its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    pub view: &'static str,
    pub about: &'static str,
    /// Column `--period` filters on, if any.
    pub period: Option<&'static str>,
    /// Column `--year` filters on, if any.
    pub year: Option<&'static str>,
    /// Column `--member` filters on, if any.
    pub member: Option<&'static str>,
    pub order: &'static str,
}

pub const REPORTS: &[Report] = &[
    Report {
        name: "period-allocation",
        view: "period_allocation_report",
        about: "each member's allocation of a period: weighted patronage, amount, cash, retained, status",
        period: Some("period_id"),
        year: None,
        member: Some("member_id"),
        order: "tenant_id, period_id, member_id",
    },
    Report {
        name: "member-statement",
        view: "member_statement",
        about: "a member's ledger lines with running balances per account",
        period: None,
        year: None,
        member: Some("member_id"),
        order: "tenant_id, member_id, account, posted_on, transaction_id, line_no",
    },
    Report {
        name: "trial-balance",
        view: "trial_balance",
        about: "debits, credits and balance per account (sums to zero per tenant and currency)",
        period: None,
        year: None,
        member: None,
        order: "tenant_id, currency, account",
    },
    Report {
        name: "payments-due",
        view: "payments_due",
        about: "payments scheduled or due, by due date",
        period: None,
        year: None,
        member: Some("member_id"),
        order: "tenant_id, due_on, payment_id",
    },
    Report {
        name: "1099-patr",
        view: "form_1099_patr_worksheet",
        about: "Form 1099-PATR worksheet per member and year: cash paid, written notices of allocation",
        period: None,
        year: Some("tax_year"),
        member: Some("member_id"),
        order: "tenant_id, tax_year, member_id",
    },
    Report {
        name: "exceptions",
        view: "exceptions",
        about: "late changes, rejected approvals, refused payment results, failed payments, dead letters",
        period: Some("period_id"),
        year: None,
        member: None,
        order: "tenant_id, kind, occurred_at, subject",
    },
    Report {
        name: "invariant-breaks",
        view: "invariant_breaks",
        about: "breaks of the books' invariants (trial balance, allocations = surplus, capital = ledger, …); empty when the books are right",
        period: None,
        year: None,
        member: None,
        order: "tenant_id, invariant, subject",
    },
];

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no report named {name:?}; reports: {known}")]
    Unknown { name: String, known: String },
    #[error("report {report} takes no {flag}")]
    NoSuchFilter {
        report: &'static str,
        flag: &'static str,
    },
    #[error("view {0} not found: is the sink's schema migrated and on the search path?")]
    NoView(&'static str),
    #[error("report {report}: {source}")]
    Database {
        report: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Finds a report by name.
pub fn find(name: &str) -> Result<&'static Report, ReportError> {
    REPORTS
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ReportError::Unknown {
            name: name.to_owned(),
            known: REPORTS
                .iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What to select.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub period: Option<String>,
    pub year: Option<i32>,
    pub member: Option<String>,
}

/// A report's rows: column names, and each row's values as text (`None` for null).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// What each column holds, from its Postgres type (for spreadsheets).
    pub kinds: Vec<ColumnKind>,
}

/// What a report column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// `numeric(p, 2)`: an amount of money.
    Money,
    /// Any other `numeric` (ratios, weights, quantities).
    Decimal,
    Integer,
    Date,
    /// `timestamptz`, shown in UTC.
    Timestamp,
    Boolean,
    Text,
}

impl ColumnKind {
    /// The kind of a column of Postgres type `type_name` (`format_type` of the column).
    pub fn of(type_name: &str) -> Self {
        match type_name {
            t if t.starts_with("numeric(") && t.ends_with(",2)") => Self::Money,
            t if t.starts_with("numeric") => Self::Decimal,
            "smallint" | "integer" | "bigint" => Self::Integer,
            "date" => Self::Date,
            t if t.starts_with("timestamp") => Self::Timestamp,
            "boolean" => Self::Boolean,
            _ => Self::Text,
        }
    }
}

/// Runs `report` with `filter`.
pub async fn run(pool: &PgPool, report: &Report, filter: &Filter) -> Result<Table, ReportError> {
    let mut conditions = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut add =
        |column: Option<&str>, value: Option<String>, flag: &'static str| match (column, value) {
            (_, None) => Ok(()),
            (Some(column), Some(value)) => {
                values.push(value);
                conditions.push(format!("{}::text = ${}", ident(column), values.len()));
                Ok(())
            }
            (None, Some(_)) => Err(ReportError::NoSuchFilter {
                report: report.name,
                flag,
            }),
        };
    add(Some("tenant_id"), filter.tenant.clone(), "--tenant")?;
    add(report.period, filter.period.clone(), "--period")?;
    add(report.year, filter.year.map(|y| y.to_string()), "--year")?;
    add(report.member, filter.member.clone(), "--member")?;
    let database = |source: sqlx::Error| ReportError::Database {
        report: report.name,
        source,
    };
    let mut tx = pool.begin().await.map_err(database)?;
    _ = sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(database)?;
    let may_be_finance: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'habitat_finance')
                AND pg_has_role(current_user, 'habitat_finance', 'USAGE')",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(database)?;
    if may_be_finance {
        _ = sqlx::query("SET LOCAL ROLE habitat_finance")
            .execute(&mut *tx)
            .await
            .map_err(database)?;
    }
    let described: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
          WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
    )
    .bind(report.view)
    .fetch_all(&mut *tx)
    .await
    .map_err(database)?;
    let kinds: Vec<ColumnKind> = described.iter().map(|(_, t)| ColumnKind::of(t)).collect();
    let columns: Vec<String> = described.into_iter().map(|(c, _)| c).collect();
    if columns.is_empty() {
        return Err(ReportError::NoView(report.view));
    }
    let select = columns
        .iter()
        .map(|c| format!("{}::text", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let condition = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {select} FROM {}{condition} ORDER BY {}",
        ident(report.view),
        report.order
    );
    let mut query = sqlx::query(&sql);
    for value in &values {
        query = query.bind(value);
    }
    let rows = query
        .fetch_all(&mut *tx)
        .await
        .map_err(database)?
        .into_iter()
        .map(|row| {
            (0..columns.len())
                .map(|i| row.get::<Option<String>, _>(i))
                .collect()
        })
        .collect();
    tx.rollback().await.map_err(database)?;
    Ok(Table {
        columns,
        rows,
        kinds,
    })
}

impl Table {
    /// Aligned columns for a terminal: text left, numbers right; `columns` picks and orders
    /// the columns shown (all when empty).
    pub fn to_text(&self, columns: &[&str]) -> String {
        let shown: Vec<usize> = if columns.is_empty() {
            (0..self.columns.len()).collect()
        } else {
            columns
                .iter()
                .filter_map(|c| self.columns.iter().position(|name| name == c))
                .collect()
        };
        let cell = |row: &[Option<String>], i: usize| row[i].clone().unwrap_or_default();
        let widths: Vec<usize> = shown
            .iter()
            .map(|&i| {
                self.rows
                    .iter()
                    .map(|row| cell(row, i).chars().count())
                    .chain([self.columns[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = shown
            .iter()
            .map(|&i| {
                self.rows.iter().any(|row| row[i].is_some())
                    && self.rows.iter().all(|row| {
                        row[i]
                            .as_deref()
                            .is_none_or(|v| v.parse::<rust_decimal::Decimal>().is_ok())
                    })
            })
            .collect();
        let line = |values: Vec<String>| {
            let cells: Vec<String> = values
                .iter()
                .zip(&widths)
                .zip(&numeric)
                .map(|((v, w), right)| {
                    if *right {
                        format!("{v:>w$}")
                    } else {
                        format!("{v:<w$}")
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        };
        let mut out = line(shown.iter().map(|&i| self.columns[i].clone()).collect());
        for row in &self.rows {
            out.push_str(&line(shown.iter().map(|&i| cell(row, i)).collect()));
        }
        out
    }

    /// RFC 4180 CSV with a header line. A text cell a spreadsheet would run as a formula —
    /// one that begins with `=`, `+`, `-`, `@`, a tab or a carriage return — is
    /// neutralised as OWASP recommends (a leading `'`, the cell quoted); numbers stay
    /// numbers.
    pub fn to_csv(&self) -> String {
        fn field(value: &str) -> String {
            let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r'])
                && value.parse::<rust_decimal::Decimal>().is_err();
            if formula {
                format!("\"'{}\"", value.replace('"', "\"\""))
            } else if value.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", value.replace('"', "\"\""))
            } else {
                value.to_owned()
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| field(c)).collect();
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|v| v.as_deref().map(field).unwrap_or_default())
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// A JSON array of objects, values as strings (exact decimals) or null.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let object: Map<String, Value> = self
                        .columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| (c.clone(), v.clone().map_or(Value::Null, Value::String)))
                        .collect();
                    Value::Object(object)
                })
                .collect(),
        )
    }

    /// The values of one column.
    pub fn column(&self, name: &str) -> Vec<Option<String>> {
        let Some(i) = self.columns.iter().position(|c| c == name) else {
            return Vec::new();
        };
        self.rows.iter().map(|r| r[i].clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let table = Table {
            columns: vec!["member".into(), "memo".into(), "amount".into()],
            rows: vec![vec![Some("m-1".into()), Some("a, \"b\"".into()), None]],
            kinds: vec![ColumnKind::Text, ColumnKind::Text, ColumnKind::Money],
        };
        assert_eq!(
            table.to_csv(),
            "member,memo,amount\r\nm-1,\"a, \"\"b\"\"\",\r\n"
        );
        assert_eq!(
            table.to_json(),
            serde_json::json!([{"member": "m-1", "memo": "a, \"b\"", "amount": null}])
        );
    }

    #[test]
    fn csv_cells_that_would_run_as_formulas_are_neutralised_and_numbers_stay_numbers() {
        let table = Table {
            columns: vec!["memo".into(), "amount".into()],
            rows: [
                ("=HYPERLINK(\"http://x\",\"pay\")", "-12.50"),
                ("+1+cmd|' /C calc'!A0", "+3.00"),
                ("-2+3", "0.00"),
                ("@SUM(A1:A9)", "1200.00"),
                ("\tlabel", "-0.01"),
                ("\r=1", "5"),
                ("plain, text", "7.10"),
            ]
            .iter()
            .map(|(memo, amount)| vec![Some((*memo).to_owned()), Some((*amount).to_owned())])
            .collect(),
            kinds: vec![ColumnKind::Text, ColumnKind::Money],
        };
        assert_eq!(
            table.to_csv(),
            "memo,amount\r\n\
             \"'=HYPERLINK(\"\"http://x\"\",\"\"pay\"\")\",-12.50\r\n\
             \"'+1+cmd|' /C calc'!A0\",+3.00\r\n\
             \"'-2+3\",0.00\r\n\
             \"'@SUM(A1:A9)\",1200.00\r\n\
             \"'\tlabel\",-0.01\r\n\
             \"'\r=1\",5\r\n\
             \"plain, text\",7.10\r\n"
        );
    }

    #[test]
    fn unknown_reports_name_the_known_ones() {
        let error = find("trial").expect_err("unknown").to_string();
        assert!(
            error.contains("trial-balance") && error.contains("1099-patr"),
            "{error}"
        );
        assert_eq!(
            find("1099-patr").map(|r| r.view).ok(),
            Some("form_1099_patr_worksheet")
        );
    }
}
