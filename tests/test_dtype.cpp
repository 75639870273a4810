#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "tensor/dtype.hpp"

using namespace purellm;

TEST(DType, NamesRoundTrip) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::Q8_0, DType::Q4_0})
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  EXPECT_FALSE(dtype_from_name("F8_E4M3").has_value());
  EXPECT_EQ(dtype_from_flag("bf16"), DType::BF16);
  EXPECT_FALSE(dtype_from_flag("i64").has_value());
}

TEST(DType, BytesFollowBlocks) {
  EXPECT_EQ(dtype_bytes(DType::F32, 10), 40u);
  EXPECT_EQ(dtype_bytes(DType::BF16, 10), 20u);
  EXPECT_EQ(dtype_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(dtype_bytes(DType::Q4_0, 64), 36u);
}

// traits() indexes the table by the enum's value: each row must sit at its own dtype, and a
// value past the table is an error, not a read beyond it.
TEST(DType, TraitsRowsFollowTheEnum) {
  for (size_t i = 0; i < kDTypeTraits.size(); ++i)
    EXPECT_EQ(static_cast<size_t>(kDTypeTraits[i].dtype), i) << kDTypeTraits[i].name;
  const auto past = static_cast<DType>(kDTypeTraits.size());
  try {
    (void)dtype_bytes(past, 1);
    FAIL() << "no error for a dtype past the table";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), ("unknown dtype " + std::to_string(kDTypeTraits.size())).c_str());
  }
}

// Every one of the 65536 half-precision bit patterns survives f16 -> f32 -> f16.
TEST(DType, F16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "pattern " << h;
  }
}

TEST(DType, F16RoundsToNearestEven) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 1.0f / 2048)), 1.0f);  // halfway, even stays
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 3.0f / 2048)), 1.0f + 1.0f / 512);  // halfway, to even
  EXPECT_EQ(f16_to_f32(f32_to_f16(70000.0f)), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(f32_to_f16(5.96046448e-08f)), 5.96046448e-08f);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(f32_to_f16(2.0e-08f)), 0.0f);
}

TEST(DType, BF16RoundTripsAndRounds) {
  for (uint32_t h = 0; h < 65536; h += 7) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_bf16(f), h);
    }
  }
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);  // halfway to even
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}
