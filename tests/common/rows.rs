//! CSV as a row set: the header, and the data rows sorted, so tables compare regardless of row order.

/// Data rows of a table.
pub type Rows = Vec<Vec<String>>;

/// The header and the sorted data rows of a CSV with a header row; panics on invalid CSV.
pub fn table(csv_text: &[u8]) -> (Vec<String>, Rows) {
    try_table(csv_text).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`table`], for any number of fields per record (a broken file is reported, not a panic); an
/// empty input is an empty header and no rows.
pub fn try_table(csv_text: &[u8]) -> Result<(Vec<String>, Rows), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text);
    let mut records = reader
        .records()
        .map(|r| r.map(|r| r.iter().map(str::to_owned).collect::<Vec<_>>()))
        .collect::<Result<Rows, _>>()
        .map_err(|e| format!("not CSV: {e}"))?;
    if records.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let header = records.remove(0);
    records.sort();
    Ok((header, records))
}

/// The lines of a text file, the first (the header) kept first and the rest sorted.
pub fn header_and_sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines
}
