pub mod connect;
pub mod consume;
pub mod produce;
pub mod topics;
