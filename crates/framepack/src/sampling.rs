//! Flow-matching sigma schedules and samplers.
