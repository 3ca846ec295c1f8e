#![no_main]
switchboard_fuzz::target!(cluster_envelope);
