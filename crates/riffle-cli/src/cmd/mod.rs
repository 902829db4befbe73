pub mod consume;
pub mod produce;
pub mod topics;
