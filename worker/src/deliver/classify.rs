//! What one attempt produced, before it is recorded: a receiver's answer classified (delivered,
//! gone, or failed with the `Retry-After` it asked for), or a failure that never reached the
//! receiver; the error kept is cut to [`MAX_ERROR_LEN`].

use chrono::Utc;
use reqwest::header::RETRY_AFTER;

use crate::{
    client::Answer,
    retry::{self, Outcome},
};

/// The longest `last_error` we store.
const MAX_ERROR_LEN: usize = 4096;

/// What one attempt produced, before it is recorded.
pub(super) struct Observed {
    pub(super) outcome: Outcome,
    pub(super) response_status: Option<i32>,
    pub(super) error: Option<String>,
}

/// A failed attempt that never reached the receiver.
pub(super) fn failed(error: String) -> Observed {
    Observed {
        outcome: Outcome::Failed { retry_after: None },
        response_status: None,
        error: Some(truncate(error)),
    }
}

/// Classify a receiver's answer.
pub(super) fn observe(answer: &Answer) -> Observed {
    let status = answer.status;
    let code = status.as_u16();
    if status.is_success() {
        return Observed {
            outcome: Outcome::Delivered,
            response_status: Some(i32::from(code)),
            error: None,
        };
    }
    let excerpt = String::from_utf8_lossy(&answer.body);
    let mut error = format!("HTTP {code}");
    if status.is_redirection() {
        error.push_str(" (redirects are not followed)");
    }
    if !excerpt.trim().is_empty() {
        error.push_str(": ");
        error.push_str(excerpt.trim());
    }
    let outcome = if code == 410 {
        Outcome::Gone
    } else {
        let retry_after = if code == 429 || code == 503 {
            answer
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, Utc::now()))
        } else {
            None
        };
        Outcome::Failed { retry_after }
    };
    Observed {
        outcome,
        response_status: Some(i32::from(code)),
        error: Some(truncate(error)),
    }
}

/// Cut `text` to at most [`MAX_ERROR_LEN`] bytes on a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_ERROR_LEN); // two bytes each
        let cut = truncate(text);
        assert_eq!(cut.len(), MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        let odd = format!("a{}", "é".repeat(MAX_ERROR_LEN));
        assert_eq!(truncate(odd).len(), MAX_ERROR_LEN - 1);
        assert_eq!(truncate("short".into()), "short");
    }
}
