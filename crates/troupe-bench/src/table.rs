//! Plain-text and Markdown tables.

/// Columns padded to their widest cell, a dashed rule under the header.
pub fn render_text(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths = widths(headers, rows);
    let mut out = String::new();
    push_line(
        &mut out,
        headers.iter().map(|h| (*h).to_owned()),
        &widths,
        "  ",
    );
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    push_line(&mut out, rule.into_iter(), &widths, "  ");
    for row in rows {
        push_line(&mut out, row.iter().cloned(), &widths, "  ");
    }
    out
}

/// A GitHub-flavoured Markdown table; `|` inside cells is escaped.
pub fn render_markdown(headers: &[&str], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    out.push_str(&format!(
        "| {} |\n",
        headers
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    out.push_str(&format!(
        "|{}|\n",
        headers.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    ));
    for row in rows {
        let mut cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
        cells.resize(headers.len(), String::new());
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

fn widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i >= w.len() {
                w.push(0);
            }
            w[i] = w[i].max(cell.chars().count());
        }
    }
    w
}

fn push_line(out: &mut String, cells: impl Iterator<Item = String>, widths: &[usize], sep: &str) {
    let mut line = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            line.push_str(sep);
        }
        let pad = widths.get(i).copied().unwrap_or(0);
        line.push_str(&cell);
        line.push_str(&" ".repeat(pad.saturating_sub(cell.chars().count())));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["ingest".into(), "events/s".into(), "52,000".into()],
            vec!["api|x".into(), "p99 ms".into(), "1.20".into()],
        ]
    }

    #[test]
    fn text_columns_line_up() {
        let t = render_text(&["scenario", "metric", "value"], &rows());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "scenario  metric    value");
        assert_eq!(lines[1], "--------  --------  ------");
        assert_eq!(lines[2], "ingest    events/s  52,000");
        assert_eq!(lines[3], "api|x     p99 ms    1.20");
    }

    #[test]
    fn markdown_escapes_pipes_and_fills_short_rows() {
        let mut r = rows();
        r.push(vec!["short".into()]);
        let t = render_markdown(&["scenario", "metric", "value"], &r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| scenario | metric | value |");
        assert_eq!(lines[1], "|---|---|---|");
        assert_eq!(lines[3], "| api\\|x | p99 ms | 1.20 |");
        assert_eq!(lines[4], "| short |  |  |");
    }
}
