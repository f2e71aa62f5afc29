//! Finance reports as an Excel workbook: one sheet per report, the header row frozen and
//! bold, amounts as numbers shown with two decimals, dates and times as dates, the rest as
//! text. Amounts are exact decimals in Postgres; a spreadsheet cell is a double, exact for
//! any amount below 2^53 cents' worth of digits (the CSV and JSON exports stay exact).

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use postgres_sink::report::{ColumnKind, Table};
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

/// Writes `sheets` (a name and its table each) into one workbook; returns its bytes.
pub fn workbook(sheets: &[(&str, &Table)]) -> Result<Vec<u8>> {
    let mut workbook = Workbook::new();
    let header = Format::new().set_bold();
    let money = Format::new().set_num_format("#,##0.00");
    let decimal = Format::new().set_num_format("0.00########");
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let timestamp = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for (name, table) in sheets {
        let sheet = workbook.add_worksheet();
        // Excel's limit on a sheet's name.
        _ = sheet.set_name(name.chars().take(31).collect::<String>())?;
        for (col, column) in table.columns.iter().enumerate() {
            _ = sheet.write_string_with_format(0, col as u16, column, &header)?;
        }
        for (i, row) in table.rows.iter().enumerate() {
            let r = i as u32 + 1;
            for (col, value) in row.iter().enumerate() {
                let Some(value) = value else { continue };
                let c = col as u16;
                let kind = table.kinds.get(col).copied().unwrap_or(ColumnKind::Text);
                let place = || format!("{name} row {r} column {}", table.columns[col]);
                match kind {
                    ColumnKind::Money | ColumnKind::Decimal | ColumnKind::Integer => {
                        let number: f64 = value.parse().with_context(place)?;
                        let format = match kind {
                            ColumnKind::Money => &money,
                            ColumnKind::Decimal => &decimal,
                            _ => &Format::new(),
                        };
                        _ = sheet.write_number_with_format(r, c, number, format)?;
                    }
                    ColumnKind::Date => {
                        let day = ExcelDateTime::parse_from_str(value).with_context(place)?;
                        _ = sheet.write_datetime_with_format(r, c, day, &date)?;
                    }
                    ColumnKind::Timestamp => {
                        // Postgres writes `2026-12-31 19:00:00+00`; Excel has no zones: UTC.
                        let at = DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z")
                            .with_context(place)?
                            .with_timezone(&Utc);
                        let text = at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
                        let at = ExcelDateTime::parse_from_str(&text).with_context(place)?;
                        _ = sheet.write_datetime_with_format(r, c, at, &timestamp)?;
                    }
                    ColumnKind::Boolean => {
                        _ = sheet.write_boolean(r, c, value == "true")?;
                    }
                    ColumnKind::Text => {
                        _ = sheet.write_string(r, c, value)?;
                    }
                }
            }
        }
        _ = sheet.set_freeze_panes(1, 0)?;
        _ = sheet.autofit();
    }
    Ok(workbook.save_to_buffer()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_does_not_fit_its_column_is_named() {
        let table = Table {
            columns: vec!["amount".into()],
            rows: vec![vec![Some("twelve".into())]],
            kinds: vec![ColumnKind::Money],
        };
        let error = workbook(&[("trial-balance", &table)]).expect_err("not a number");
        assert!(
            format!("{error:#}").contains("trial-balance row 1 column amount"),
            "{error:#}"
        );
    }
}
