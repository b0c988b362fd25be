//! Following one position through the player gateway while its world changes: a
//! poller that asks the gateway's locate endpoint again and again, and the check
//! that a run of its answers moved from the old cells to the new one once, never
//! back, with an epoch that never fell.
//!
//! Answers are read as JSON (`cell`, `epoch.mark`, `epoch.seq`), so the test
//! environment needs nothing of the gateway but its documented wire format.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

/// One answer of the gateway to a locate.
#[derive(Debug, Clone, PartialEq)]
pub struct LocateAnswer {
    /// When it arrived.
    pub at: SystemTime,
    /// Its HTTP status.
    pub status: u16,
    /// The cell it named, for a success.
    pub cell: Option<String>,
    /// The layout epoch (mark, seq) it carried, for a success.
    pub epoch: Option<(u64, u64)>,
}

/// Asks a locate URL every `every` until dropped, keeping every answer.
#[derive(Debug)]
pub struct LocatePoller {
    answers: Arc<Mutex<Vec<LocateAnswer>>>,
    task: JoinHandle<()>,
}

impl LocatePoller {
    /// Starts polling `url` (a full locate URL with its query).
    pub fn start(url: String, every: Duration) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&answers);
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                if let Ok(response) = http.get(&url).send().await {
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    let (cell, epoch) = if status == 200 {
                        (
                            body["cell"].as_str().map(str::to_owned),
                            body["epoch"]["mark"].as_u64().zip(body["epoch"]["seq"].as_u64()),
                        )
                    } else {
                        (None, None)
                    };
                    let answer = LocateAnswer {
                        at: SystemTime::now(),
                        status,
                        cell,
                        epoch,
                    };
                    kept.lock().unwrap_or_else(PoisonError::into_inner).push(answer);
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { answers, task }
    }

    /// The cell the latest success named.
    pub fn last_cell(&self) -> Option<String> {
        self.lock().iter().rev().find_map(|a| a.cell.clone())
    }

    /// The answers so far, leaving none behind.
    pub fn take(&self) -> Vec<LocateAnswer> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LocateAnswer>> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LocatePoller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks a run of answers across a transition from cells `from` to cell `to`:
/// only successes, or 503 while an owner is not serving; first cells of `from`,
/// then `to` and never back; epochs never fall; the run ends on `to`.
pub fn check_run(answers: &[LocateAnswer], from: &[&str], to: &str) -> anyhow::Result<()> {
    let mut moved = false;
    let mut last_epoch = None;
    for (k, a) in answers.iter().enumerate() {
        anyhow::ensure!(
            a.status == 200 || a.status == 503,
            "answer {k}: status {} in {answers:?}",
            a.status
        );
        let Some(cell) = &a.cell else { continue };
        if cell == to {
            moved = true;
        } else {
            anyhow::ensure!(
                !moved && from.contains(&cell.as_str()),
                "answer {k}: {cell} after {to} answered, or not one of {from:?}, in {answers:?}"
            );
        }
        if let (Some(last), Some(epoch)) = (last_epoch, a.epoch) {
            anyhow::ensure!(epoch >= last, "answer {k}: epoch {epoch:?} fell below {last:?}");
        }
        last_epoch = a.epoch.or(last_epoch);
    }
    let last = answers.iter().rev().find_map(|a| a.cell.as_deref());
    anyhow::ensure!(last == Some(to), "the run does not end on {to}: {last:?}");
    Ok(())
}

/// When the gateway first named `cell` in a run.
pub fn first_naming(answers: &[LocateAnswer], cell: &str) -> Option<SystemTime> {
    answers
        .iter()
        .find(|a| a.cell.as_deref() == Some(cell))
        .map(|a| a.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, cell: Option<&str>, mark: u64) -> LocateAnswer {
        LocateAnswer {
            at: SystemTime::UNIX_EPOCH,
            status,
            cell: cell.map(str::to_owned),
            epoch: cell.map(|_| (mark, 1)),
        }
    }

    #[test]
    fn a_run_moves_once_and_its_epoch_never_falls() {
        let good = [
            answer(200, Some("c0"), 1),
            answer(503, None, 0),
            answer(200, Some("c0-0"), 2),
        ];
        assert!(check_run(&good, &["c0"], "c0-0").is_ok());
        let back = [
            answer(200, Some("c0"), 1),
            answer(200, Some("c0-0"), 2),
            answer(200, Some("c0"), 2),
            answer(200, Some("c0-0"), 2),
        ];
        assert!(
            check_run(&back, &["c0"], "c0-0").is_err(),
            "back to a retired cell"
        );
        let fell = [answer(200, Some("c0"), 3), answer(200, Some("c0-0"), 2)];
        assert!(check_run(&fell, &["c0"], "c0-0").is_err(), "an epoch fell");
        let stranger = [answer(200, Some("c1"), 1), answer(200, Some("c0-0"), 2)];
        assert!(
            check_run(&stranger, &["c0"], "c0-0").is_err(),
            "a cell of neither side"
        );
        let lost = [
            answer(200, Some("c0"), 1),
            answer(404, None, 0),
            answer(200, Some("c0-0"), 2),
        ];
        assert!(
            check_run(&lost, &["c0"], "c0-0").is_err(),
            "the world went missing"
        );
        assert!(check_run(&good[..2], &["c0"], "c0-0").is_err(), "never arrived");
    }
}
