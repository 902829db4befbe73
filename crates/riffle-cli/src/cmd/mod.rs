pub mod connect;
pub mod consume;
pub mod lag;
pub mod produce;
pub mod topics;
