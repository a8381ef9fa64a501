//! The stop's one budget (`kvm_guests_stop_budget`), planned before any
//! save begins: the saves run in rounds of `kvm_guests_parallel`, each VM
//! gets an equal share of the budget (never more than its
//! `kvm_guests_save_timeout`), and the end of the budget is kept for the
//! fallbacks (`kvm_guests_shutdown_timeout`). VMs for which no round fits
//! get their fallback at once, while there is time for it, rather than
//! never: a stop that runs past what systemd gives it loses them with the
//! host.

use std::time::{Duration, Instant};

/// The least a save is given: below it a save of any real VM is a waste of
/// the time its fallback needs. A VM whose own save limit is shorter gets
/// that limit instead.
pub(super) const MIN_SHARE: Duration = Duration::from_secs(10);

/// The stop's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StopBudget {
    pub started: Instant,
    pub budget: Duration,
    /// Kept at the end for the fallbacks.
    pub reserve: Duration,
    /// How many rounds of saves fit.
    pub rounds: usize,
    /// Each save's limit.
    pub share: Duration,
    /// How many of the VMs to save are given a save, in their order; the
    /// others get their fallback at once.
    pub savable: usize,
}

impl StopBudget {
    /// Plans `to_save` saves, `parallel` at once, each limited to
    /// `save_timeout`, in `budget` of which `reserve` is kept for the
    /// fallbacks.
    pub fn plan(
        started: Instant,
        budget: Duration,
        reserve: Duration,
        parallel: usize,
        to_save: usize,
        save_timeout: Duration,
    ) -> StopBudget {
        let parallel = parallel.max(1);
        let usable = budget.saturating_sub(reserve);
        let least = MIN_SHARE.min(save_timeout).max(Duration::from_millis(1));
        let needed = to_save.div_ceil(parallel);
        let fit = usize::try_from(usable.as_nanos() / least.as_nanos()).unwrap_or(usize::MAX);
        let rounds = needed.min(fit);
        let share = match u32::try_from(rounds) {
            Ok(r) if r > 0 => (usable / r).min(save_timeout),
            _ => Duration::ZERO,
        };
        StopBudget {
            started,
            budget,
            reserve,
            rounds,
            share,
            savable: to_save.min(rounds.saturating_mul(parallel)),
        }
    }

    /// When the budget is spent.
    pub fn end(&self) -> Instant {
        self.started + self.budget
    }

    /// After this no save begins: what is left is the fallbacks'.
    pub fn cutoff(&self) -> Instant {
        self.started + self.budget.saturating_sub(self.reserve)
    }

    /// The limit of a save begun at `now` by a VM whose own limit is
    /// `own`: its share, cut to what is left before the cutoff; `None` when
    /// that is too short to be worth a save (the VM gets its fallback).
    /// A tenth is forgiven: the saves before took their whole share and a
    /// moment more to end, which the plan does not count.
    pub fn limit_at(&self, now: Instant, own: Duration) -> Option<Duration> {
        let left = self.cutoff().saturating_duration_since(now);
        let limit = self.share.min(own).min(left);
        let least = MIN_SHARE.min(own).min(self.share) * 9 / 10;
        (limit >= least && !limit.is_zero()).then_some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn plan(budget: u64, reserve: u64, parallel: usize, n: usize, timeout: u64) -> StopBudget {
        StopBudget::plan(
            Instant::now(),
            S(budget),
            S(reserve),
            parallel,
            n,
            S(timeout),
        )
    }

    #[test]
    fn a_large_budget_gives_each_save_its_own_timeout() {
        let p = plan(600, 120, 4, 16, 60);
        assert_eq!((p.rounds, p.share, p.savable), (4, S(60), 16));
    }

    #[test]
    fn the_budget_is_shared_out_over_the_rounds_parallel_allows() {
        // 20 VMs, 4 at once: 5 rounds in 600 - 120 s.
        let p = plan(600, 120, 4, 20, 300);
        assert_eq!((p.rounds, p.share, p.savable), (5, S(96), 20));
        // The last round ends before the fallbacks' reserve begins.
        assert!(p.share * 5 <= S(600 - 120));
    }

    #[test]
    fn vms_beyond_the_rounds_that_fit_get_their_fallback() {
        // 45 s less 5 s kept: four rounds of 10 s, 2 at once: 8 of 16.
        let p = plan(45, 5, 2, 16, 300);
        assert_eq!((p.rounds, p.share, p.savable), (4, S(10), 8));
        let p = plan(5, 5, 4, 16, 300);
        assert_eq!((p.rounds, p.savable), (0, 0), "nothing left for saves");
    }

    #[test]
    fn a_save_that_cannot_fit_in_what_is_left_is_not_begun() {
        let p = plan(45, 5, 2, 16, 300);
        let t = p.started;
        assert_eq!(p.limit_at(t, S(300)), Some(S(10)));
        assert_eq!(p.limit_at(t, S(4)), Some(S(4)), "its own limit is less");
        let late = Duration::from_millis(30_500);
        assert_eq!(p.limit_at(t + late, S(300)), Some(S(10) - (late - S(30))));
        assert_eq!(p.limit_at(t + S(32), S(300)), None, "8 s left of 40");
        assert_eq!(p.limit_at(t + S(50), S(300)), None);
    }

    #[test]
    fn no_vm_to_save_plans_nothing() {
        let p = plan(600, 120, 4, 0, 300);
        assert_eq!((p.rounds, p.savable), (0, 0));
    }
}
