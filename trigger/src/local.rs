//! Backend-local state, and running code as the bootstrap superuser.

use pgrx::pg_sys::{self, Oid};

/// Backend-local state in a `static`. PostgreSQL backends are single-threaded, and pgrx only
/// lets the main thread call into PostgreSQL, so nothing here is ever shared between threads.
/// Statics are never dropped, so nothing runs at process exit after memory contexts are gone.
pub struct BackendLocal<T>(T);

// SAFETY: see the type's documentation: only the backend's one thread touches the value.
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    pub fn get(&self) -> &T {
        &self.0
    }
}

/// Runs `f` as the bootstrap superuser, as a SECURITY DEFINER function would. An error inside
/// `f` aborts the (sub)transaction, which restores the user by itself.
pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: plain reads and writes of the backend's current user.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = f();
    // SAFETY: as above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}
