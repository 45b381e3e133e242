//! Dynamic resource management decisions (issue 3): cluster snapshot, detectors, selection,
//! placement, policies.
