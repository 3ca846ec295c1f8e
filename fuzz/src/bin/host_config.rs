#![no_main]
switchboard_fuzz::target!(host_config);
