//! Frame-context packing schedules (filled in below).
