//! The few syscalls std lacks.
