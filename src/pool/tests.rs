//! Unit and model-based tests of the engine.

use super::*;
