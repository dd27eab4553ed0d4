#![no_std]
// This file exists to give the crate a library target, so `tcptrace` can list it as a
// build-dependency and be rebuilt when the kernel programs change (aya-template layout).
