//! `vm resume`'s wait: polls the migration after the resume request, prints each note the
//! agent adds meanwhile (what it does and what it waits for), and stops once the migration
//! completed, the agent's resume of it ended without completing it, or the wait is over
//! (then says what it was last waiting for; the agent goes on within its resume window).

use drover_api::{AgentClient, MigrationRecord, MigrationState};
use std::time::Duration;

/// The notes with which the agent says a resume asked through the API was taken: the memory
/// post-copy's, and a stalled storage post-copy stream's.
const ASKED: [&str; 2] = [
    "resume asked through the API",
    "storage post-copy resume asked through the API",
];

/// How the agent's notes begin when its resume ended without completing the migration.
const ENDED: [&str; 5] = [
    "not resumed",
    "resuming stopped",
    "storage post-copy resumed but not completed",
    "the stream completed but the settle waits",
    "the memory post-copy completed",
];

/// Where the notes of the latest resume request begin, if one was taken.
pub fn asked_at(notes: &[String]) -> Option<usize> {
    notes.iter().rposition(|n| ASKED.contains(&n.as_str()))
}

/// Whether the agent's resume that `notes` record from `asked` on ended without completing
/// the migration (pure, for tests).
pub fn gave_up(notes: &[String], asked: usize) -> bool {
    notes
        .get(asked..)
        .unwrap_or_default()
        .iter()
        .any(|n| ENDED.iter().any(|e| n.starts_with(e)) || n.contains("no more attempts"))
}

/// Polls migration `id` every second until it is no longer paused, its agent's resume ended
/// (see [`gave_up`]), or `timeout` passes, printing each new note to stderr as progress;
/// returns the last record. `seen`: the number of notes the record had before the request.
///
/// # Errors
/// The agent cannot be asked.
pub async fn wait_resumed(
    agent: &AgentClient,
    id: &str,
    seen: usize,
    timeout: Duration,
) -> anyhow::Result<MigrationRecord> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut printed = seen;
    loop {
        let m = agent.migration(id).await?;
        for note in m.notes.iter().skip(printed) {
            eprintln!("  {note}");
        }
        printed = printed.max(m.notes.len());
        let ended = asked_at(&m.notes).is_some_and(|i| i >= seen && gave_up(&m.notes, i));
        if m.state != MigrationState::Paused || ended {
            return Ok(m);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "no outcome within --wait {} s; the agent goes on within the migration's \
                 resume window (`drover vm list` shows where it stands){}",
                timeout.as_secs(),
                m.notes
                    .last()
                    .map(|n| format!("; last: {n}"))
                    .unwrap_or_default()
            );
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    /// The user's `vm resume` waited 300 s in silence: a storage post-copy's resume says it
    /// was asked in its own words, and its end is one of several notes.
    #[test]
    fn each_way_a_resume_ends_is_seen() {
        let n = notes(&[
            "not resumed after 600 s: old",
            "storage post-copy resume asked through the API",
            "storage post-copy resumed but not completed (Stalled): both QEMUs kept",
        ]);
        let at = asked_at(&n).expect("asked");
        assert_eq!(at, 1);
        assert!(gave_up(&n, at));
        let n = notes(&[
            "resume asked through the API",
            "the memory post-copy completed 17 s after the pause (1 recover attempt(s)) but \
             the migration is not completed: the stream has not",
        ]);
        assert!(gave_up(&n, asked_at(&n).expect("asked")));
        // An earlier resume's end does not end this one.
        let n = notes(&[
            "not resumed after 600 s: the link did not return",
            "resume asked through the API",
            "the destination answers again: post-copy resumed",
        ]);
        assert!(!gave_up(&n, asked_at(&n).expect("asked")));
        assert_eq!(asked_at(&notes(&["post-copy paused"])), None);
    }
}
