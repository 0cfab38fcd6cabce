//! What people read: terminal tables, markdown and HTML reports.

pub mod inspect;
