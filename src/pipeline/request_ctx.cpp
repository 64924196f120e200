#include "bgw/pipeline/request_ctx.hpp"

#include <utility>

namespace bgw::pipeline {

void charges::hold_caller(std::shared_ptr<policy::rate_limiter> limits,
                          std::string name,
                          std::uint64_t estimate) {
    caller_limits_ = std::move(limits);
    caller_ = std::move(name);
    caller_estimate_ = estimate;
    caller_settled_ = false;
}

void charges::hold_caller_shared(shared_ledger& ledger,
                                 std::string key,
                                 std::uint64_t tpm,
                                 std::uint64_t estimate) {
    shared_caller_ = {&ledger, std::move(key), tpm, estimate};
}

void charges::hold_target_shared(shared_ledger& ledger,
                                 std::string key,
                                 std::uint64_t tpm,
                                 std::uint64_t estimate) {
    shared_target_ = {&ledger, std::move(key), tpm, estimate};
}

void charges::shared_charge::settle(std::uint64_t actual) {
    // Only a tokens bucket learns from usage; an exact estimate has nothing to correct.
    if (ledger && tpm && estimate != actual) ledger->correct(key, tpm, estimate, actual);
    ledger = nullptr;
}

void charges::hold_target(policy::traffic_policy& traffic,
                          std::string model,
                          std::uint64_t estimate) {
    traffic_ = &traffic;
    target_model_ = std::move(model);
    target_estimate_ = estimate;
}

void charges::settle(std::uint64_t actual, clock::time_point now) {
    if (traffic_ && !target_model_.empty())
        traffic_->settle(target_model_, target_estimate_, actual, now);
    target_model_.clear();
    shared_target_.settle(actual);
    shared_caller_.settle(actual);
    if (caller_settled_ || !caller_estimate_ || !caller_limits_) return;
    caller_settled_ = true;
    caller_limits_->correct(caller_, caller_estimate_, actual, now);
}

}  // namespace bgw::pipeline
