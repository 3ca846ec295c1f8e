#![no_main]
switchboard_fuzz::target!(peer_signal);
