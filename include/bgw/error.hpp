#pragma once
/// Errors as values for the pure core (the data path throws nothing).

#include <string>
#include <utility>

#include <boost/assert/source_location.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/system/result.hpp>

namespace bgw {

/// A gateway-made error in Bedrock's shape: HTTP status, `x-amzn-ErrorType`, JSON `message`.
struct error {
    boost::beast::http::status status = boost::beast::http::status::bad_request;
    std::string type;     ///< e.g. "ValidationException"
    std::string message;  ///< human text; never contains secrets or bodies
};

inline error validation_error(std::string message) {
    return {boost::beast::http::status::bad_request, "ValidationException", std::move(message)};
}

/// `result<T>`: a T or a bgw::error. Test with `if (!r)` and read `r.error()`.
template <class T>
using result = boost::system::result<T, error>;

/// Required by boost::system::result::value() for a custom error type. Calling value() on an
/// error is a logic bug in the gateway, so this aborts through BOOST_ASSERT semantics.
[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

}  // namespace bgw
