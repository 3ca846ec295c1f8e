#![no_main]
switchboard_fuzz::target!(uuid_parse);
