//! Session event loops: one thread per core, each running its own tokio
//! event loop (nginx's workers, as threads). The accept loops hand each new
//! connection to the loop with the fewest live sessions, and the session
//! never leaves it: its sockets, timers and the tasks it spawns (hyper's
//! connections, relays) all wake on that one thread. A single loop for all
//! sessions left cores idle under load (HTTPS at 16 connections: a fifth of
//! the host idle while the loop was the bottleneck); tokio's work-stealing
//! runtime would use them, but moves a session's tasks between threads, and
//! each move is a cross-core wake-up on its hot path.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;

/// The most loops started, however many cores the host has: an agent
/// serves one host's sessions, and each idle loop still holds a heap.
const MAX_LOOPS: usize = 8;

/// The session loops, started once with the agent.
pub struct SessionLoops {
    loops: Vec<Loop>,
}

/// One loop's thread and what the dispatcher reads of it.
struct Loop {
    handle: tokio::runtime::Handle,
    load: Arc<Load>,
    /// Taken by [`SessionLoops::stop`]: dropping the sender ends the loop.
    running: Mutex<Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>>,
}

/// Sessions on one loop.
#[derive(Default)]
struct Load {
    /// Running now.
    live: AtomicUsize,
    /// Given to the loop since it started.
    served: AtomicU64,
}

impl SessionLoops {
    /// One loop per core (at most [`MAX_LOOPS`]). Call after capabilities
    /// are dropped: threads inherit the capabilities of the thread that
    /// starts them.
    pub fn start() -> anyhow::Result<Self> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_LOOPS);
        let loops = (0..count).map(Loop::start).collect::<anyhow::Result<_>>()?;
        Ok(Self { loops })
    }

    /// How many loops run.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// Runs the session `make` builds on the least loaded loop. `make` is
    /// called there, so the sockets it adopts register with that loop.
    pub fn spawn<F>(&self, make: impl FnOnce() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(chosen) = self.loops.iter().min_by_key(|l| l.load.live.load(Ordering::Relaxed)) else { return };
        let load = Arc::clone(&chosen.load);
        load.live.fetch_add(1, Ordering::Relaxed);
        load.served.fetch_add(1, Ordering::Relaxed);
        chosen.handle.spawn(async move {
            // Counted out however the session ends, a panic included.
            let _live = LiveGuard(load);
            make().await;
        });
    }

    /// Stops every loop and waits for its thread: sessions still running
    /// are dropped there, as the main loop's tasks are at its end.
    pub fn stop(&self) {
        let running: Vec<_> =
            self.loops.iter().filter_map(|l| l.running.lock().unwrap_or_else(|p| p.into_inner()).take()).collect();
        let threads: Vec<_> = running
            .into_iter()
            .map(|(stop, thread)| {
                drop(stop);
                thread
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Takes one live session off its loop's count when dropped.
struct LiveGuard(Arc<Load>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Loop {
    fn start(index: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a session event loop")?;
        let handle = runtime.handle().clone();
        let load = Arc::new(Load::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let idle = Arc::clone(&load);
        let thread = std::thread::Builder::new()
            .name(format!("airlock-loop-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = release_memory_when_idle(|| {
                            (idle.served.load(Ordering::Relaxed), idle.live.load(Ordering::Relaxed) == 0)
                        }) => {}
                    }
                });
            })
            .context("starting a session event loop's thread")?;
        Ok(Self { handle, load, running: Mutex::new(Some((stop, thread))) })
    }
}

/// Gives the memory the calling thread's sessions used back to the
/// system once it has none: at the first three checks (every 5 s) that find
/// it idle after sessions came in (what follows the last session, such as
/// dropping a just-in-time role after its grace, is released too), and
/// after start-up. `activity` says how many sessions it was given so far
/// and whether none is live. mimalloc keeps freed pages for reuse, per
/// thread; without this an idle agent's RSS stayed near its peak's after a
/// load (the soak: 56, 72, 74 MB idle after three cycles peaking at 85 MB).
pub(super) async fn release_memory_when_idle(activity: impl Fn() -> (u64, bool)) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut releases) = (None, 0);
    loop {
        tick.tick().await;
        let (served, idle) = activity();
        if seen != Some(served) {
            (seen, releases) = (Some(served), 0);
        }
        if releases < 3 && idle {
            super::release_free_memory();
            releases += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_go_to_the_least_loaded_loop_and_stay_on_its_thread() {
        let loops = SessionLoops::start().expect("loops");
        let (sent, received) = std::sync::mpsc::channel();
        let (release, held) = tokio::sync::watch::channel(false);
        for session in 0..loops.len() * 2 {
            let (sent, mut held) = (sent.clone(), held.clone());
            loops.spawn(move || async move {
                let before = std::thread::current().name().map(str::to_owned);
                let _ = held.wait_for(|&go| go).await;
                tokio::task::yield_now().await;
                let after = std::thread::current().name().map(str::to_owned);
                let _ = sent.send((session, before, after));
            });
        }
        let live: Vec<_> = loops.loops.iter().map(|l| l.load.live.load(Ordering::Relaxed)).collect();
        assert!(live.iter().all(|&n| n == 2), "two sessions on each loop: {live:?}");
        release.send(true).expect("sessions waiting");
        drop(sent);
        let ran: Vec<_> = received.iter().collect();
        assert_eq!(ran.len(), loops.len() * 2);
        for (session, before, after) in ran {
            assert!(before.as_deref().is_some_and(|n| n.starts_with("airlock-loop-")), "{session}: {before:?}");
            assert_eq!(before, after, "session {session} moved threads");
        }
        loops.stop();
    }
}
