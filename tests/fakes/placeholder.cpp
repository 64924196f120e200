// Keeps bgw_fakes non-empty before the fake exists.
