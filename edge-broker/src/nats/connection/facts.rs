//! What a connection decided for the subject of its last PUB ([`SubjectFacts`]), kept while
//! the subject repeats, and who a publish there would reach locally ([`Local`]).

use std::sync::Arc;

use edge_log::{Destination, Source};
use edge_proto::nats::subject;

use crate::ingest;

/// What a connection decided for the subject of its last PUB: everything that depends on the
/// subject alone (or on it and a generation), so a PUB repeating the subject costs one pointer
/// test ([`Arc::ptr_eq`] with the decoder's shared subject) instead of validating, splitting
/// and comparing the subject for each decision.
#[derive(Debug)]
pub(super) struct SubjectFacts {
    /// The subject, as the decoder shares it.
    pub(super) subject: Arc<str>,
    /// It is a valid publish subject (no wildcards, no empty tokens).
    pub(super) valid: bool,
    /// Refused by the rule that needs no configuration (`$SYS`, `$share`); the ACL is asked
    /// for every PUB.
    pub(super) reserved: Option<ingest::Denied>,
    /// The auth generation under whose rules the connection's ACL allowed publishing here
    /// (`None`: not asked yet, or refused); asked again after any reload.
    pub(super) permitted: Option<u64>,
    /// Where it goes upstream, for a route table generation.
    pub(super) route: Option<(u64, Option<Destination>)>,
    /// Who would get it locally, for a hub generation.
    pub(super) local: Option<(u64, Local)>,
}

/// Who a publish on a subject would reach on this broker ([`SubjectFacts::local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Local {
    /// The subject has no MQTT topic: the hub cannot carry it (counted as a drop).
    Unmappable,
    /// No subscription matches.
    Nobody,
    /// At least one subscription matches.
    Someone,
}

impl SubjectFacts {
    pub(super) fn of(subject: &Arc<str>) -> SubjectFacts {
        SubjectFacts {
            subject: Arc::clone(subject),
            valid: subject::validate_publish(subject).is_ok(),
            reserved: ingest::check_reserved(Source::Nats, subject).err(),
            permitted: None,
            route: None,
            local: None,
        }
    }
}
