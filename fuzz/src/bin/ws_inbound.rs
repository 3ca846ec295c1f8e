#![no_main]
switchboard_fuzz::target!(ws_inbound);
