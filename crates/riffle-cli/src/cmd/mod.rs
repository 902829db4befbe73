pub mod connect;
pub mod consume;
pub mod groups;
pub mod lag;
pub mod produce;
pub mod topics;
