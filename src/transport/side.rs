//! A task's side wake-up sources, polled only when they fired.
//!
//! A WebSocket session waits on its socket and, besides, on its kick cell,
//! its event receiver and its idle timer; a connection waits on hyper's
//! connection and its watchdog. The socket wakes the task on every frame
//! or request; the side sources almost never. Polled by `select!` with the
//! task's waker, every side source was polled again on every wake-up
//! (callgrind: ~0.55k instructions per WebSocket round trip). With
//! [`Side`] they register a waker of their own, which notes that one of
//! them fired before it wakes the task.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};

/// The waker of a task's side wake-up sources: they are polled again only
/// after one of them fired, not whenever the task's main source (its
/// socket) wakes it. Polled with the task's own waker, as `select!` does,
/// each is polled on every wake-up and checks its state under an atomic or
/// a lock to find nothing new.
pub struct Side {
    flag: Arc<SideFlag>,
    waker: Waker,
}

struct SideFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for SideFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Side {
    /// Woken at first, so that the sources are polled once and register.
    pub fn new() -> Side {
        let flag = Arc::new(SideFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Side {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// A context to poll the sources with, when one of them woke the task
    /// (or [`Side::open`] asked) since the last time. Registers the task's
    /// waker first, so that a wake-up in between is not lost.
    pub fn woken(&self, cx: &Context<'_>) -> Option<Context<'_>> {
        self.flag.task.register(cx.waker());
        self.flag
            .woken
            .swap(false, Ordering::AcqRel)
            .then(|| Context::from_waker(&self.waker))
    }

    /// Polls the sources next time whatever woke the task.
    pub fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

impl Default for Side {
    fn default() -> Side {
        Side::new()
    }
}
