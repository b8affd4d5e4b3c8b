//! The document trees the instance decoder reads: `serde_json::Value` (XML bodies, peer
//! batches) and [`Node`], a lighter JSON tree for the registration path.
//!
//! A registration body is parsed once and read once, so building a `serde_json::Value` (an
//! owned `String` per key and value, a `BTreeMap` per object) costs more than decoding the
//! instance from it. [`Node`] borrows strings from the body where it can and keeps object
//! members in a `Vec`, which halves the cost of a ~1 KB registration. Both trees answer the
//! decoder's questions identically (a property test checks it): a repeated member's last
//! value wins, and members are listed in key order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use super::DecodeError;

/// What a tree node holds, as the decoder sees it.
pub enum View<'a> {
    Null,
    Bool(bool),
    Num(&'a Number),
    Str(&'a str),
    Arr,
    Obj,
}

/// A parsed document the instance decoder can read.
pub trait Tree: Sized {
    /// The node's kind and scalar value.
    fn view(&self) -> View<'_>;
    /// An object's member `key` (the last one when repeated); `None` for other nodes.
    fn get(&self, key: &str) -> Option<&Self>;
    /// An object's members in key order, one per key (the last when repeated).
    fn members(&self) -> Vec<(&str, &Self)>;
}

impl Tree for Value {
    fn view(&self) -> View<'_> {
        match self {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Num(n),
            Value::String(s) => View::Str(s),
            Value::Array(_) => View::Arr,
            Value::Object(_) => View::Obj,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    fn members(&self) -> Vec<(&str, &Value)> {
        self.as_object().map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect()).unwrap_or_default()
    }
}

/// A JSON value borrowing its strings from the parsed body where no unescaping was needed.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    /// Members in document order, repeats included.
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Tree for Node<'_> {
    fn view(&self) -> View<'_> {
        match self {
            Node::Null => View::Null,
            Node::Bool(b) => View::Bool(*b),
            Node::Num(n) => View::Num(n),
            Node::Str(s) => View::Str(s),
            Node::Arr(_) => View::Arr,
            Node::Obj(_) => View::Obj,
        }
    }

    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Node::Obj(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn members(&self) -> Vec<(&str, &Self)> {
        match self {
            Node::Obj(members) => {
                let sorted: BTreeMap<&str, &Self> = members.iter().map(|(k, v)| (k.as_ref(), v)).collect();
                sorted.into_iter().collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Parses a JSON body into a [`Node`] tree.
pub fn parse_json(body: &[u8]) -> Result<Node<'_>, DecodeError> {
    // One (vectorised) UTF-8 check of the whole body: parsing from bytes would check every
    // string on its own (measured: a fifth of the parse's instructions). Invalid UTF-8 is
    // malformed JSON either way.
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::new(format!("malformed JSON: {e}")))?;
    serde_json::from_str(text).map_err(|e| DecodeError::new(format!("malformed JSON: {e}")))
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Num(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Num(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node<'de>, E> {
        Number::from_f64(n).map(Node::Num).ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(Key(k)) = map.next_key()? {
            members.push((k, map.next_value()?));
        }
        Ok(Node::Obj(members))
    }
}

/// An object key, borrowed when possible (serde's own `Cow` impl always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_keeps_the_last_repeat() {
        let body = br#"{"a":"x","b":"y\n","a":"z","n":1.5,"m":[true,null]}"#;
        let n = parse_json(body).unwrap();
        assert!(matches!(n.get("a"), Some(Node::Str(Cow::Borrowed("z")))));
        assert!(matches!(n.get("b"), Some(Node::Str(Cow::Owned(s))) if s == "y\n"));
        let keys: Vec<&str> = n.members().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "m", "n"]);
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v.members().len(), 4);
        assert!(matches!(v.get("a").map(Tree::view), Some(View::Str("z"))));
        assert!(parse_json(b"{\"a\":").is_err());
    }
}
