/* base/hash_map.h: a hash map from byte strings to 64-bit integers.
 *
 * Open addressing with linear probing over a power-of-two table kept at most
 * half full, so a lookup touches one or two slots. Keys are byte strings
 * (pointer and length, any bytes, NUL included) that the map does not copy:
 * the caller keeps every key alive and unchanged for the map's lifetime, which
 * suits keys that already live in an arena (token pieces, tensor names). */
#ifndef STRATA_BASE_HASH_MAP_H
#define STRATA_BASE_HASH_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata.h"

typedef struct hash_map hash_map;

/* Creates an empty map sized for about expected_count keys (it grows past that). */
strata_status hash_map_create(size_t expected_count, hash_map **out, strata_error *err);
/* Frees the map (not the keys); accepts NULL. */
void hash_map_destroy(hash_map *map);

/* Sets key's value, replacing an existing one; keeps a pointer to key. */
strata_status hash_map_put(hash_map *map, const void *key, size_t length, int64_t value,
                           strata_error *err);
/* Looks key up; returns false when absent (then *value is untouched). */
bool hash_map_get(const hash_map *map, const void *key, size_t length, int64_t *value);
/* Returns the number of keys. */
size_t hash_map_count(const hash_map *map);

/* Returns the 64-bit hash the map uses for a byte string. */
uint64_t hash_bytes(const void *key, size_t length);

#endif
