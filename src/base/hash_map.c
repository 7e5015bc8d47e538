/* base/hash_map.c: open-addressing hash map from byte strings to integers.
 *
 * A slot holds the key's pointer and length, 32 bits of its hash (compared
 * before the bytes, so a probe rarely calls memcmp on a non-matching key) and
 * the value. An empty slot has a NULL key; an empty key is stored with a
 * pointer to a static empty string so it stays distinguishable. The table
 * doubles when it would pass half full. */
#include "base/hash_map.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"

typedef struct hash_slot {
    const char *key;
    uint32_t length;
    uint32_t hash;
    int64_t value;
} hash_slot;

struct hash_map {
    hash_slot *slots;
    size_t capacity; /* a power of two */
    size_t count;
};

static const char empty_key[1] = "";

uint64_t hash_bytes(const void *key, size_t length)
{
    const unsigned char *bytes = key;
    uint64_t hash = 0x9E3779B97F4A7C15ull ^ (uint64_t)length;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        hash = (hash ^ word) * 0xBF58476D1CE4E5B9ull;
        hash ^= hash >> 29;
        bytes += 8;
        length -= 8;
    }
    uint64_t tail = 0;
    if (length > 0)
        memcpy(&tail, bytes, length);
    hash = (hash ^ tail) * 0x94D049BB133111EBull;
    hash ^= hash >> 32;
    hash *= 0xD6E8FEB86659FD93ull;
    hash ^= hash >> 32;
    return hash;
}

static size_t capacity_for(size_t count)
{
    size_t capacity = 16;
    while (capacity < count * 2)
        capacity *= 2;
    return capacity;
}

strata_status hash_map_create(size_t expected_count, hash_map **out, strata_error *err)
{
    *out = NULL;
    if (expected_count > SIZE_MAX / 4 / sizeof(hash_slot))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "hash map: %zu expected keys is more than memory can index", expected_count);
    hash_map *map = calloc(1, sizeof *map);
    if (map != NULL) {
        map->capacity = capacity_for(expected_count);
        map->slots = calloc(map->capacity, sizeof *map->slots);
    }
    if (map == NULL || map->slots == NULL) {
        free(map);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "hash map: cannot allocate a table for %zu keys",
                           expected_count);
    }
    *out = map;
    return STRATA_OK;
}

void hash_map_destroy(hash_map *map)
{
    if (map == NULL)
        return;
    free(map->slots);
    free(map);
}

/* Returns the slot holding key, or the empty slot where it would go. */
static hash_slot *find_slot(hash_slot *slots, size_t capacity, const void *key, uint32_t length,
                            uint32_t hash)
{
    size_t mask = capacity - 1;
    for (size_t index = hash & mask;; index = (index + 1) & mask) {
        hash_slot *slot = &slots[index];
        if (slot->key == NULL)
            return slot;
        if (slot->hash == hash && slot->length == length && memcmp(slot->key, key, length) == 0)
            return slot;
    }
}

static strata_status grow(hash_map *map, strata_error *err)
{
    size_t capacity = map->capacity * 2;
    hash_slot *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "hash map: cannot grow the table to %zu slots",
                           capacity);
    for (size_t i = 0; i < map->capacity; i++) {
        const hash_slot *old = &map->slots[i];
        if (old->key != NULL)
            *find_slot(slots, capacity, old->key, old->length, old->hash) = *old;
    }
    free(map->slots);
    map->slots = slots;
    map->capacity = capacity;
    return STRATA_OK;
}

strata_status hash_map_put(hash_map *map, const void *key, size_t length, int64_t value,
                           strata_error *err)
{
    if (length > UINT32_MAX)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "hash map: a key of %zu bytes is longer than the limit of %u bytes", length,
                           (unsigned)UINT32_MAX);
    if ((map->count + 1) * 2 > map->capacity) {
        strata_status status = grow(map, err);
        if (status != STRATA_OK)
            return status;
    }
    if (key == NULL || length == 0)
        key = empty_key;
    uint32_t hash = (uint32_t)hash_bytes(key, length);
    hash_slot *slot = find_slot(map->slots, map->capacity, key, (uint32_t)length, hash);
    if (slot->key == NULL) {
        slot->key = key;
        slot->length = (uint32_t)length;
        slot->hash = hash;
        map->count++;
    }
    slot->value = value;
    return STRATA_OK;
}

bool hash_map_get(const hash_map *map, const void *key, size_t length, int64_t *value)
{
    if (length > UINT32_MAX)
        return false;
    if (key == NULL || length == 0)
        key = empty_key;
    uint32_t hash = (uint32_t)hash_bytes(key, length);
    const hash_slot *slot = find_slot(map->slots, map->capacity, key, (uint32_t)length, hash);
    if (slot->key == NULL)
        return false;
    *value = slot->value;
    return true;
}

size_t hash_map_count(const hash_map *map)
{
    return map->count;
}
