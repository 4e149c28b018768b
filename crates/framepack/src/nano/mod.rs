//! The embedded nano model's data: procedural game-like clips with prompts naming their actions
//! (issue 9 builds the training on top).

pub mod clips;
