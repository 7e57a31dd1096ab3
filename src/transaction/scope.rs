//! What the transitions inside a running `transaction()` note on their
//! thread for it: the operation ids that applied, and whether a race was
//! lost. Depends on nothing of the crate, so that the error type can note a
//! lost race when a diesel error converts into it.

use std::cell::RefCell;

use uuid::Uuid;

/// What the body of the [`transaction`] running on this thread reported.
#[derive(Default)]
pub(super) struct Scope {
    /// The operations applied in it, in order.
    pub(super) operations: Vec<Uuid>,
    /// Whether something in it lost a race (40001, 40P01).
    pub(super) lost_race: bool,
}

thread_local! {
    pub(super) static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Note that the operation `id` applied inside the caller's transaction.
pub(crate) fn note_operation(id: Uuid) {
    SCOPE.with_borrow_mut(|scope| {
        if let Some(scope) = scope {
            scope.operations.push(id);
        }
    });
}

/// Note that a statement inside the caller's transaction lost a race.
pub(crate) fn note_lost_race() {
    SCOPE.with_borrow_mut(|scope| {
        if let Some(scope) = scope {
            scope.lost_race = true;
        }
    });
}
