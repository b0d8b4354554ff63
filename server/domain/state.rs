//! The job state machine. Transitions outside the graph of domain.md are refused here, in one place:
//!
//! ```text
//! QUEUED → PLANNING → AWAITING_APPROVAL → RENDERING → QUALITY_CHECK → [AWAITING_FINAL_APPROVAL] → DELIVERED
//!    \________\_______________\______________\______________\__________________________\→ CANCELLED / FAILED
//! ```
//! plus PLANNING → RENDERING (fast track / auto-approve), QUALITY_CHECK → DELIVERED (no final review)
//! and AWAITING_FINAL_APPROVAL → RENDERING (a requested revision renders only the named shots again).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Planning,
    AwaitingApproval,
    Rendering,
    QualityCheck,
    AwaitingFinalApproval,
    Delivered,
    Cancelled,
    Failed,
}

/// A refused transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot move from {from:?} to {to:?}")]
pub struct IllegalTransition {
    pub from: JobState,
    pub to: JobState,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Planning,
        JobState::AwaitingApproval,
        JobState::Rendering,
        JobState::QualityCheck,
        JobState::AwaitingFinalApproval,
        JobState::Delivered,
        JobState::Cancelled,
        JobState::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Delivered | JobState::Cancelled | JobState::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Planning => "PLANNING",
            JobState::AwaitingApproval => "AWAITING_APPROVAL",
            JobState::Rendering => "RENDERING",
            JobState::QualityCheck => "QUALITY_CHECK",
            JobState::AwaitingFinalApproval => "AWAITING_FINAL_APPROVAL",
            JobState::Delivered => "DELIVERED",
            JobState::Cancelled => "CANCELLED",
            JobState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the graph has an edge `self → to`.
    pub fn can_move_to(self, to: JobState) -> bool {
        use JobState::*;
        if self.is_terminal() {
            return false;
        }
        matches!(
            (self, to),
            (_, Cancelled | Failed)
                | (Queued, Planning)
                | (Planning, AwaitingApproval | Rendering)
                | (AwaitingApproval, Rendering)
                | (Rendering, QualityCheck)
                | (QualityCheck, AwaitingFinalApproval | Delivered)
                | (AwaitingFinalApproval, Rendering | Delivered)
        )
    }

    /// The checked transition.
    pub fn move_to(self, to: JobState) -> Result<JobState, IllegalTransition> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_happy_paths_are_edges() {
        use JobState::*;
        for path in [
            &[
                Queued,
                Planning,
                AwaitingApproval,
                Rendering,
                QualityCheck,
                Delivered,
            ][..],
            &[
                Queued,
                Planning,
                Rendering,
                QualityCheck,
                AwaitingFinalApproval,
                Rendering,
                QualityCheck,
                AwaitingFinalApproval,
                Delivered,
            ][..],
        ] {
            let mut state = path[0];
            for &next in &path[1..] {
                state = state.move_to(next).expect("edge of the graph");
            }
            assert_eq!(state, Delivered);
        }
    }

    #[test]
    fn terminal_states_are_final_and_backwards_moves_are_refused() {
        use JobState::*;
        for t in [Delivered, Cancelled, Failed] {
            for to in JobState::ALL {
                assert!(t.move_to(to).is_err(), "{t:?} -> {to:?}");
            }
        }
        assert!(Rendering.move_to(Planning).is_err());
        assert!(Queued.move_to(Rendering).is_err());
        assert!(QualityCheck.move_to(Rendering).is_err());
    }

    proptest! {
        /// No sequence of attempted moves reaches a state except through edges, and once terminal
        /// a job stays where it is.
        #[test]
        fn random_walks_respect_the_graph(moves in proptest::collection::vec(0usize..9, 0..40)) {
            let mut state = JobState::Queued;
            let mut terminal_at: Option<JobState> = None;
            for m in moves {
                let to = JobState::ALL[m];
                match state.move_to(to) {
                    Ok(next) => { prop_assert!(terminal_at.is_none()); state = next; }
                    Err(e) => prop_assert_eq!(e.from, state),
                }
                if state.is_terminal() { terminal_at.get_or_insert(state); }
            }
            if let Some(t) = terminal_at { prop_assert_eq!(t, state); }
        }

        #[test]
        fn names_round_trip(i in 0usize..9) {
            let s = JobState::ALL[i];
            prop_assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
