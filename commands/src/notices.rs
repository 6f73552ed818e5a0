//! The notice handler (NT-3): records what became of a notice in its own stream
//! (`notice-<id>`), for the workers' reports and the operator's retries. It is the generic
//! handler of the notice aggregate: a report already recorded appends nothing.

pub type NoticeHandler = crate::handler::Handler<custode_domain::notice::Notices>;
