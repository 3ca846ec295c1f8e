#![no_main]
switchboard_fuzz::target!(tunnel_datagrams);
