// The one translation unit that holds the Asio, Asio SSL, Beast and URL implementations
// (BOOST_*_SEPARATE_COMPILATION is defined for every target), so the rest of the tree
// compiles against declarations only. This is what keeps incremental builds fast.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
#include <boost/url/src.hpp>
