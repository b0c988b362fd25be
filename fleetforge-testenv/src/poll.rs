//! Waiting for the cluster to show something: the one polling loop the tests
//! share.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// Calls `check` every `every` until it yields a value or `timeout` passes. An
/// error from `check` counts as "not yet" and is reported if time runs out, so a
/// test that waits through a transient API error fails with the last one.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => bail!("{what}: not within {timeout:?} (last error: {e:#})"),
                None => bail!("{what}: not within {timeout:?}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_and_names_the_last_error_on_timeout() {
        let mut calls = 0;
        let v = eventually(
            "third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                let n = calls;
                async move { Ok((n == 3).then_some(n)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);

        let err = eventually::<(), _, _>(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || async { bail!("connection refused") },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("never: not within") && err.contains("connection refused"),
            "{err}"
        );
    }
}
