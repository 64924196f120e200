#pragma once
/// The five providers as the chain runs them (src/aws/credentials/<provider>.cpp; the order is
/// in credential_chain.cpp and README.md). Each returns what its from_* in credential_chain.hpp
/// returns, and when it returns nullopt (not configured) sets `missing` to say why.

#include "bgw/aws/credential_chain.hpp"

#include <string>
#include <string_view>

namespace bgw::aws::cred {

provider_result environment_provider(const provider_io& io, std::string& missing);
provider_result web_identity_provider(const provider_io& io,
                                      std::string_view region,
                                      std::string& missing);
provider_result profile_provider(const provider_io& io,
                                 std::string_view region,
                                 std::string_view profile,
                                 std::string& missing);
provider_result container_provider(const provider_io& io, std::string& missing);
provider_result imds_provider(const provider_io& io, std::string& missing);

}  // namespace bgw::aws::cred
