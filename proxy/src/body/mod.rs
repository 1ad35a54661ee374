//! Bodies in both directions, streamed frame by frame: nothing here ever holds a whole body.
//! `request` is what the upstream client sends; `response` is what goes back to the agent (it
//! holds the upstream connection's lease, so it sits above `upstream`, and `request` below).

pub mod request;
pub mod response;
