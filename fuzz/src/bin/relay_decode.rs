#![no_main]
switchboard_fuzz::target!(relay_decode);
