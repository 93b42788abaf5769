//! Unit tests of the interpreter on hand-assembled code under real Sv39 tables.
