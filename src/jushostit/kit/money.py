"""Money is an integer number of minor units plus an ISO 4217 currency; the exponent comes from this table,
never from a literal 100 (REFERENCE §1 F11, F19)."""

from __future__ import annotations

from decimal import Decimal

# ISO 4217 minor-unit exponents of the currencies we accept.
EXPONENTS: dict[str, int] = {
    "AUD": 2, "BGN": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2, "CZK": 2, "DKK": 2,
    "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0,
    "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PLN": 2, "RON": 2,
    "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2, "UGX": 0, "USD": 2, "VND": 0,
    "XAF": 0, "XOF": 0, "ZAR": 2,
}


def is_known(currency: str) -> bool:
    return currency in EXPONENTS


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise ValueError(f"unknown currency {currency!r}") from None


def to_major(amount_minor: int, currency: str) -> Decimal:
    """Exact: 900 EUR minor units → Decimal('9.00'); 900 JPY → Decimal('900')."""
    return Decimal(amount_minor).scaleb(-exponent(currency))


def format_minor(amount_minor: int, currency: str) -> str:
    """A plain decimal string with the currency's number of places: '9.00', '900', '1.250'."""
    return f"{to_major(amount_minor, currency):.{exponent(currency)}f}"
