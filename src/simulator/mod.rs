//! The fake WeChat API.
