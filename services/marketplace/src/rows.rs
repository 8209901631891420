//! A batch's records as bound parameters: SQLite gets multi-row `VALUES` chunks, PostgreSQL
//! one array per column for `UNNEST`. Either way each value is bound once, as its own type,
//! instead of serialising the batch to JSON and having the database parse it again for every
//! column (SQLite's `json_extract` re-read each record's object once per column).

use agriportal_platform::{Error, Result};

/// SQLite's bound-parameter limit: `SQLITE_MAX_VARIABLE_NUMBER`, 32766 since SQLite 3.32 (the
/// bundled `libsqlite3-sys` 0.30 is SQLite 3.46.0, compiled with the default).
pub const SQLITE_MAX_PARAMS: usize = 32_766;

/// One column's value of one record, typed as both backends bind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// `TEXT NOT NULL`.
    Text(&'a str),
    /// Nullable `TEXT`.
    OptText(Option<&'a str>),
    /// `BIGINT NOT NULL`.
    Int(i64),
    /// Nullable `BIGINT`.
    OptInt(Option<i64>),
    /// Nullable `BOOLEAN` (0/1 on SQLite).
    OptBool(Option<bool>),
}

/// One column of a batch, for PostgreSQL's `UNNEST($n::type[], …)`.
#[derive(Debug, PartialEq)]
pub enum Column<'a> {
    /// `TEXT[]`.
    Text(Vec<&'a str>),
    /// `TEXT[]` with NULLs.
    OptText(Vec<Option<&'a str>>),
    /// `BIGINT[]`.
    Int(Vec<i64>),
    /// `BIGINT[]` with NULLs.
    OptInt(Vec<Option<i64>>),
    /// `BOOLEAN[]` with NULLs.
    OptBool(Vec<Option<bool>>),
}

impl<'a> Column<'a> {
    fn like(value: Value<'a>, capacity: usize) -> Self {
        match value {
            Value::Text(_) => Column::Text(Vec::with_capacity(capacity)),
            Value::OptText(_) => Column::OptText(Vec::with_capacity(capacity)),
            Value::Int(_) => Column::Int(Vec::with_capacity(capacity)),
            Value::OptInt(_) => Column::OptInt(Vec::with_capacity(capacity)),
            Value::OptBool(_) => Column::OptBool(Vec::with_capacity(capacity)),
        }
    }

    fn push(&mut self, value: Value<'a>) -> Result<()> {
        match (self, value) {
            (Column::Text(c), Value::Text(v)) => c.push(v),
            (Column::OptText(c), Value::OptText(v)) => c.push(v),
            (Column::Int(c), Value::Int(v)) => c.push(v),
            (Column::OptInt(c), Value::OptInt(v)) => c.push(v),
            (Column::OptBool(c), Value::OptBool(v)) => c.push(v),
            // Each kind writes its values in one fixed order, so this is a bug, not input.
            (column, value) => {
                return Err(Error::internal(format!(
                    "a record's value {value:?} does not fit its column {column:?}"
                )))
            }
        }
        Ok(())
    }
}

/// The values of `rows` (each `width` values, row after row) as one column each.
pub fn columns<'a>(values: &[Value<'a>], width: usize) -> Result<Vec<Column<'a>>> {
    if width == 0 || !values.len().is_multiple_of(width) {
        return Err(Error::internal(format!(
            "{} values do not make rows of {width}",
            values.len()
        )));
    }
    let rows = values.len() / width;
    let mut columns: Vec<Column<'a>> = values[..width.min(values.len())]
        .iter()
        .map(|v| Column::like(*v, rows))
        .collect();
    for row in values.chunks(width) {
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(*value)?;
        }
    }
    Ok(columns)
}

/// Records per SQLite statement of `width` parameters each: as many as fit under
/// [`SQLITE_MAX_PARAMS`].
pub fn sqlite_rows_per_statement(width: usize) -> usize {
    (SQLITE_MAX_PARAMS / width.max(1)).max(1)
}

/// `rows` tuples of `width` anonymous placeholders each, for a multi-row `VALUES`, bound in
/// order. Anonymous (`?`), not numbered (`$n`, so that values every row shares could be bound
/// once): SQLite looks a named or numbered parameter up in a list as long as the statement's
/// parameters, for each one as it parses and again as it binds, which is quadratic (measured:
/// a batch of 1,000 sales lines took longer as 9,003 numbered parameters than as JSON).
pub fn values_tuples(rows: usize, width: usize) -> String {
    let mut tuple = String::with_capacity(width * 3 + 2);
    tuple.push('(');
    for col in 0..width {
        if col > 0 {
            tuple.push_str(", ");
        }
        tuple.push('?');
    }
    tuple.push(')');
    let mut sql = String::with_capacity(rows * (tuple.len() + 2));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_hold_anonymous_parameters() {
        assert_eq!(values_tuples(2, 3), "(?, ?, ?), (?, ?, ?)");
    }

    #[test]
    fn a_statement_stays_under_sqlite_s_limit() {
        let rows = sqlite_rows_per_statement(12);
        assert!(rows * 12 <= SQLITE_MAX_PARAMS);
        assert!((rows + 1) * 12 > SQLITE_MAX_PARAMS);
    }

    #[test]
    fn values_become_columns_and_mismatches_are_refused() {
        let values = [
            Value::Text("a"),
            Value::OptInt(None),
            Value::Text("b"),
            Value::OptInt(Some(2)),
        ];
        assert_eq!(
            columns(&values, 2).unwrap(),
            vec![
                Column::Text(vec!["a", "b"]),
                Column::OptInt(vec![None, Some(2)])
            ]
        );
        let mixed = [Value::Text("a"), Value::Int(1)];
        assert!(columns(&mixed, 1).is_err());
        assert!(columns(&values, 3).is_err());
    }
}
