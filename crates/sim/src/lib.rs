//! Trace-driven simulator (issue 3).
