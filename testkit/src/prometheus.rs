//! Prometheus text (what `/metrics` answers) read back: a series is its name and labels as
//! printed (`name{label="value"}`), its value the number after the last space.

/// `/metrics` at `url`, as text.
pub async fn scrape(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .expect("metrics text")
}

/// The value of exactly `series` (a name, or a name and its labels as printed), if exported.
pub fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).find_map(|(key, value)| (key == series).then_some(value))
}

/// The sum of the series that start with `prefix` (a name, or a name and the start of its
/// labels); 0 when there is none.
pub fn sum(text: &str, prefix: &str) -> f64 {
    samples(text)
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(_, value)| value)
        .sum()
}

/// Every sample line as (series, value); comments and unparsable lines are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.trim(), value.trim().parse().ok()?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE a counter\na 3\nb{x=\"1\"} 2\nb{x=\"2\"} 5\nab 7\n";

    #[test]
    fn values_are_read_by_exact_series_and_summed_by_prefix() {
        assert_eq!(value(TEXT, "a"), Some(3.0));
        assert_eq!(value(TEXT, "b{x=\"2\"}"), Some(5.0));
        assert_eq!(value(TEXT, "c"), None);
        assert_eq!(sum(TEXT, "b{"), 7.0);
        assert_eq!(sum(TEXT, "a"), 10.0);
    }
}
