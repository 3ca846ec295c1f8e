#![no_main]
switchboard_fuzz::target!(chunk_reassembler);
